//! LM reproductions (filled below).
