"""Settings: the typed config built from Params and environment, named profiles, site profiles."""
