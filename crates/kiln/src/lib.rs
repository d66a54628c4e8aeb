//! kiln: the host runtime library.
