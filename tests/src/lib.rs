//! Test support for Cairn's cross-process tests (see `tests/tests/`).
