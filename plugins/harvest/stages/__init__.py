"""The stages of a harvest, one module each, each owning its loop over the state DB."""
