//! Placeholder: the gcs adapter is being written.
