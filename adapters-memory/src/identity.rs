//! Development identity provider (written by another helper).
