//! Tests of the analyses of a diff.
