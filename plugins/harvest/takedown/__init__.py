"""Taking published images down on request, and keeping them down.

A request names image URLs, page URLs, domains and SHA-256s; :mod:`.match` turns it into the images
the state DB knows, :mod:`.clean` removes them from every destination they were published to
(originals, variants, thumbnails, manifests, Parquet, WebDataset shards, card) and from staging,
:mod:`.blocklist` keeps later runs from downloading or publishing them again, and :mod:`.run` ties
it together with the audit record. No Airflow here: the ``image_takedown`` DAG is a thin door.
"""
