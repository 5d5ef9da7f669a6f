"""Image bytes: inspection, EXIF and private metadata, near duplicates, variants, preprocessing."""
