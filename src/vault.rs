//! vault (work in progress)
