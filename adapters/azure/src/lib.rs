//! Placeholder: the azure adapter is being written.
