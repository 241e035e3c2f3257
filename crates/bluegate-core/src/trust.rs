//! Being built; see the issues.
