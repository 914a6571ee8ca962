//! token (work in progress)
