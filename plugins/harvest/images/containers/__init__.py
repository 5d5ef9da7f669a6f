"""One module per container family, each walking its format structure by structure and rebuilding it
as the copy to publish; :func:`harvest.images.sanitize.clean_file` picks the walker for a format."""
