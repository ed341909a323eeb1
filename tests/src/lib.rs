//! Helpers for the kernel end-to-end tests.
