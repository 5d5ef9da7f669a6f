"""Image harvester: crawl pages, find images, keep the ones a classifier recognises, publish a dataset.

This package has no Airflow imports so every stage can be run and tested on its own; ``dags/`` only
wires the stages into a DAG.
"""

__version__ = "0.1.0"
