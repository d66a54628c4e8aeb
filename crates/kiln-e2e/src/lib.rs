//! Helpers for kiln end-to-end tests.
