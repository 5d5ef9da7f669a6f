"""What a rendering page's scripts fetched and drew, as the browser sees it: the answers to their
requests (hashed, JSON kept) and the ``blob:`` images traced back to those answers' bytes.

web/render.py runs the in-page scripts below and routes the requests; pages/script_fed.py reads the
result. Every amount read back from a page is capped, per answer and per page: a hostile page may
fetch or draw without end.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

#: a script's fetch longer than this is refused (as any script the page loads)
MAX_SCRIPT_BYTES = 5 * 1024 * 1024
#: requests a page's scripts make whose answers are noted (the script files themselves are not)
SCRIPT_FETCHES = {"fetch", "xhr"}
#: a JSON answer longer than this is not kept for reading image URLs out of it
MAX_JSON_BYTES = 2 * 1024 * 1024
#: JSON kept per page at most, all answers together (a page may fetch a thousand)
MAX_JSON_TOTAL = 16 * 1024 * 1024
#: a blob: image larger than this is not read back for tracing (a fetched one is at most MAX_SCRIPT_BYTES)
MAX_BLOB_BYTES = MAX_SCRIPT_BYTES
#: blob bytes read back per page at most, all blobs together
MAX_BLOB_TOTAL = 64 * 1024 * 1024
#: elements looked at for blob: images, at most (a page of a million nodes is not walked whole)
MAX_BLOB_ELEMENTS = 20_000

#: Runs before the page's own scripts: every Blob turned into a URL stays reachable by its URL, even
#: after the page revokes it (galleries revoke as soon as the image has loaded).
KEEP_BLOBS = """(() => {
  const blobs = new Map();
  const create = URL.createObjectURL;
  URL.createObjectURL = function (object) {
    const url = create.call(URL, object);
    if (object instanceof Blob) blobs.set(url, object);
    return url;
  };
  Object.defineProperty(window, "__harvestBlobs", { value: blobs, enumerable: false });
})();"""

#: Every element showing a blob: image (an <img>'s source or a background), numbered with a
#: data-harvest-blob attribute, with the Blob's bytes (base64) when it is kept and small enough.
READ_BLOBS = """async ([maxBytes, maxElements, maxTotal]) => {
  const blobs = window.__harvestBlobs || new Map();
  const found = [];
  let total = 0;
  const elements = Array.from(document.querySelectorAll("*")).slice(0, maxElements);
  for (const element of elements) {
    let url = null, kind = "img";
    if (element.tagName === "IMG") url = element.currentSrc || element.getAttribute("src");
    if (!url || !url.startsWith("blob:")) {
      const match = /url\\("?(blob:[^")]+)"?\\)/.exec(getComputedStyle(element).backgroundImage || "");
      url = match ? match[1] : null;
      kind = "background";
    }
    if (!url) continue;
    const index = found.length;
    element.setAttribute("data-harvest-blob", String(index));
    const blob = blobs.get(url);
    const item = { index, url, kind, tag: element.tagName.toLowerCase(), size: blob ? blob.size : null };
    if (blob && blob.size <= maxBytes && total + blob.size > maxTotal) item.overTotal = true;
    else if (blob && blob.size <= maxBytes) {
      total += blob.size;
      const bytes = new Uint8Array(await blob.arrayBuffer());
      let text = "";
      for (let i = 0; i < bytes.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      }
      item.data = btoa(text);
    }
    found.push(item);
  }
  return found;
}"""

#: The traced elements made to name the fetched URL instead of the blob: one.
NAME_TRACED = """(traced) => {
  for (const [index, kind, url] of traced) {
    const element = document.querySelector('[data-harvest-blob="' + index + '"]');
    if (!element) continue;
    if (kind === "img") {
      element.setAttribute("src", url);
      element.removeAttribute("srcset");
    } else {
      element.style.backgroundImage = 'url("' + url + '")';
    }
  }
}"""


@dataclass
class ScriptResponse:
    """One answer to a request the page's scripts made (fetch or XMLHttpRequest)."""

    url: str  # the final URL, after redirects
    content_type: str
    sha256: str
    json: str | None = None  # the body, when it is JSON (and at most MAX_JSON_BYTES)


@dataclass
class BlobImage:
    """An element that showed a ``blob:`` image, and the fetched response its bytes came from."""

    blob_url: str
    kind: str  # "img" or "background"
    tag: str
    sha256: str | None = None
    response_url: str | None = None  # None: not traced, ``reason`` says why
    reason: str | None = None


@dataclass
class Rendered:
    """The DOM after the page's scripts ran, and what they fetched and drew."""

    html: bytes
    responses: list[ScriptResponse] = field(default_factory=list)
    blobs: list[BlobImage] = field(default_factory=list)
    seconds: float = 0.0


def is_json(content_type: str, body: bytes) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json") or kind == "text/json":
        return True
    return kind in {"text/plain", "application/octet-stream", ""} and body.lstrip()[:1] in (b"{", b"[")


def trace_blobs(found: list[dict], responses: list[ScriptResponse]) -> list[BlobImage]:
    """Each blob: image matched to the fetched response with the same bytes (by SHA-256)."""
    by_sha = {response.sha256: response.url for response in responses}
    traced = []
    for item in found:
        blob = BlobImage(item["url"], item["kind"], item["tag"])
        data = item.get("data")
        if data is None:
            if item.get("size") is None:
                blob.reason = "the blob was not made by URL.createObjectURL in the page"
            elif item.get("overTotal"):
                blob.reason = f"the page's blobs are over the {MAX_BLOB_TOTAL} bytes read back per page"
            else:
                blob.reason = f"blob of {item['size']} bytes is over the {MAX_BLOB_BYTES} bytes read back"
        else:
            blob.sha256 = hashlib.sha256(base64.b64decode(data)).hexdigest()
            blob.response_url = by_sha.get(blob.sha256)
            if blob.response_url is None:
                blob.reason = "no response the page fetched has these bytes (made or changed by a script)"
        traced.append(blob)
    return traced


def noted(url: str, content_type: str, body: bytes, kept: int = 0) -> ScriptResponse:
    """What is kept of a script's fetch: its hash always, its text when it is JSON (within the
    per-answer cap, and the page's total cap given the ``kept`` JSON of earlier answers)."""
    noted = ScriptResponse(url, content_type, hashlib.sha256(body).hexdigest())
    small = len(body) <= MAX_JSON_BYTES and kept + len(body) <= MAX_JSON_TOTAL
    if small and is_json(content_type, body):
        noted.json = body.decode("utf-8", errors="replace")
    return noted
