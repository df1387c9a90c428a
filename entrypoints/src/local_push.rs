//! Nothing any more: the local server used to re-register every device's push endpoint at start, under
//! handles that changed with each run. The memory push gateway now saves its endpoints in the data
//! directory (`rookery_adapters_memory::push`), so the handles in the log stay valid across restarts.
//!
//! The module is empty until `lib.rs`, owned elsewhere, stops declaring it.
