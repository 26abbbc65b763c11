//! The strategy matrix: per-class dwell onset and F1 turned into advice. Pure, no I/O.
