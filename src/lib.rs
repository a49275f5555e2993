//! The parts of the compatrun binary that tests and fuzz targets reach directly: the
//! container-image reader (`image`), whose input a hostile party controls.

pub mod image;
