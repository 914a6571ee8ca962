//! pan (work in progress)
