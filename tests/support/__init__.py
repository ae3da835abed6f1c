"""Helpers the tests share (no tests here): loopback processes, a headless browser,
sample images of every kind (encoded, DICOM, drawn radiographs) and direct ASGI calls.

Imported as ``support.<module>``: ``tests/`` is on ``sys.path`` because its
``conftest.py`` sits in a folder without ``__init__.py`` (pytest's default import mode).
"""
