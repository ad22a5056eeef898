"""One way to release what a detector or extractor holds outside Python (a MediaPipe graph, dlib's models).

MediaPipe closes a graph left to the garbage collector at an arbitrary point — inside another
extraction, or at interpreter exit, where it can hang — so every class that opens one releases it in
``close()`` and is a context manager through this base.
"""
from __future__ import annotations


class NativeResource:
    """Base of the objects holding a native resource: ``with obj: ...`` or :meth:`close`, which a
    subclass implements so that it may be called any number of times (and on a half-built object)."""

    def close(self) -> None:
        """Release the resource now; a second call does nothing. (This base holds none.)"""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
