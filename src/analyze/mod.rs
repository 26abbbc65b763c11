//! Pure math over stored embeddings and predictions: no I/O.

pub mod classification;
