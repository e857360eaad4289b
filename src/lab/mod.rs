//! The embedded lab server.
