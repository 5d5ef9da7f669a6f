"""The gallery: a small web app over the harvest state DB, mounted into the Airflow API server by a plugin.

It lives beside the domain package, not inside it, because it depends on FastAPI (and, when mounted, on
Airflow); the domain package stays free of both.
"""
