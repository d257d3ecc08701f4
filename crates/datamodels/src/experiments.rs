//! Reproductions (below).
