//! Pure math over stored embeddings and predictions: no I/O.

pub mod classification;
pub mod cluster;
pub mod detectors;
pub mod params;
pub mod pca;
pub mod rank;
pub mod sweep;
pub mod trajectory;
