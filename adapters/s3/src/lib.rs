//! Placeholder: the s3 adapter is being written.
