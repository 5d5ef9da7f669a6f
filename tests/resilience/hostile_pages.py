"""Pages built to make link extraction slow: each is at most the default page cap (5 MB) and aims at
one piece of work that grows faster than the page (a backtracking regular expression, a search that
starts again for every image).

Run as a script, it times extraction of each page in a child process of its own and prints one line
per page; a child still running after the time limit is stopped and reported as such::

    PYTHONPATH=plugins python -m tests.resilience.hostile_pages [--limit 120] [--size 5242880] [names...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable

PAGE_CAP = 5 * 1024 * 1024
PAGE_URL = "http://hostile.example/page.html"


def _fill(prefix: str, unit: str, suffix: str, size: int) -> bytes:
    """``prefix`` + as many ``unit`` as fit + ``suffix``, at most ``size`` bytes."""
    count = max(1, (size - len(prefix) - len(suffix)) // len(unit))
    return (prefix + unit * count + suffix).encode()


def _units(prefix: str, make: Callable[[int], str], suffix: str, size: int) -> bytes:
    parts, used, index = [prefix], len(prefix) + len(suffix), 0
    while True:
        unit = make(index)
        if used + len(unit) > size:
            break
        parts.append(unit)
        used += len(unit)
        index += 1
    parts.append(suffix)
    return "".join(parts).encode()


def style_background(size: int = PAGE_CAP) -> bytes:
    """One style attribute of ``background:url(`` over and over: never a closing parenthesis."""
    return _fill('<html><body><div style="', "background:url(", '"></div></body></html>', size)


def style_background_quoted(size: int = PAGE_CAP) -> bytes:
    """The same with an opening quote that is never closed the way a url() needs."""
    return _fill("<html><body><div style='", 'background:url("', "'></div></body></html>", size)


def style_background_properties(size: int = PAGE_CAP) -> bytes:
    """``background:`` declarations without a semicolon and a ``url(`` only at the very end."""
    return _fill('<html><body><div style="', "background: ", 'url(x)"></div></body></html>', size)


def meta_charset(size: int = PAGE_CAP) -> bytes:
    """``<meta_charset=`` repeated: the declared-encoding search reads the page's first 5%."""
    return _fill("", "<meta_charset=", "", size)


def placeholder_src(size: int = PAGE_CAP) -> bytes:
    """An image whose src is one huge file name made of placeholder words, not ending in .gif."""
    return _fill('<html><body><img src="/', "blank", '"></body></html>', size)


def many_images(size: int = PAGE_CAP) -> bytes:
    """Images side by side in one block: every image asks how many images its block holds."""
    return _units("<html><body><div>", lambda n: f'<img src="/i/{n}.jpg">', "</div></body></html>", size)


def loose_images(size: int = PAGE_CAP) -> bytes:
    """Images in spans without a paragraph before them: every image looks back for nearby text."""
    return _units("<html><body>", lambda n: f'<span><img src="/s/{n}.jpg"></span>', "</body></html>", size)


def huge_srcset(size: int = PAGE_CAP) -> bytes:
    """One image with a srcset of hundreds of thousands of renditions."""
    return _units('<html><body><img srcset="', lambda n: f"/r/{n}.jpg {n + 1}w, ", '"></body></html>', size)


def deep_images(size: int = PAGE_CAP) -> bytes:
    """Images at the bottom of a deep nest of elements: each one walks up to the root."""
    depth = 5000
    return _units(
        "<html><body>" + "<div>" * depth, lambda n: f'<img src="/d/{n}.jpg">', "</div>" * depth, size
    )


PAGES: dict[str, Callable[[int], bytes]] = {
    "style_background": style_background,
    "style_background_quoted": style_background_quoted,
    "style_background_properties": style_background_properties,
    "meta_charset": meta_charset,
    "placeholder_src": placeholder_src,
    "many_images": many_images,
    "loose_images": loose_images,
    "huge_srcset": huge_srcset,
    "deep_images": deep_images,
}


def _extract(name: str, size: int, budgeted: bool, queue) -> None:
    import harvest.pages.images as extract
    from harvest.settings.config import HarvestConfig

    page = PAGES[name](size)
    budget = None
    if budgeted and hasattr(extract, "ExtractBudget"):  # as run_extract gives each page: the defaults
        budget = extract.ExtractBudget(HarvestConfig.extract_seconds, HarvestConfig.extract_max_images)
    started = time.perf_counter()
    try:
        found = extract.extract_page(page, PAGE_URL, **({"budget": budget} if budget else {}))
        outcome = f"{len(found.items)} images"
    except Exception as exc:  # noqa: BLE001 - reported, e.g. a budget overrun
        outcome = f"{type(exc).__name__}: {exc}"
    queue.put((len(page), time.perf_counter() - started, outcome))


def time_page(
    name: str, size: int, limit: float, budgeted: bool = True
) -> tuple[int | None, float | None, str]:
    """(page bytes, seconds, outcome) of extracting one page in a child process, with the default
    per-page budget when the code has one; seconds is None when the child was stopped at ``limit``."""
    queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=_extract, args=(name, size, budgeted, queue))
    child.start()
    child.join(limit)
    if child.is_alive():
        child.kill()
        child.join()
        return None, None, f"still running after {limit:.0f} s"
    return queue.get(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(PAGES))
    parser.add_argument("--limit", type=float, default=120.0, help="seconds before a page is given up")
    parser.add_argument("--size", type=int, default=PAGE_CAP, help="page size in bytes")
    parser.add_argument("--no-budget", action="store_true", help="extract without the per-page budget")
    args = parser.parse_args()
    for name in args.names:
        size, seconds, outcome = time_page(name, args.size, args.limit, not args.no_budget)
        shown = f"{seconds:8.2f} s" if seconds is not None else f"> {args.limit:.0f} s"
        print(f"{name:30} {size or args.size:>9} B {shown:>10}  {outcome}", flush=True)


if __name__ == "__main__":
    main()
