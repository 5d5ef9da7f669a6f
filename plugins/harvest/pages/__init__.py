"""Reading web pages: bytes to text, what a site profile selects, the words around an image."""
