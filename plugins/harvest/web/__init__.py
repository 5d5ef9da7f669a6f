"""Talking to web servers: the one HTTP client, its guard, politeness, robots.txt, rendering, URLs."""
