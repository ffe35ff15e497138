"""A readers-writer lock: many concurrent searches, or one mutation (add/remove/reset/train).

Searches release the GIL inside the core, so without this an `add` from another thread could
grow the code storage while a scan reads it. Searches never wait on each other; a mutation
waits until the searches in flight are done, and new searches wait behind a waiting mutation
(so a steady stream of searches cannot starve it).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
