//! Rookery's domain: the pure, synchronous model of a mobile backend.
//!
//! Everything here is a value or a function of values.
//! Nothing does I/O, nothing is async, nothing knows about AWS, HTTP or tokio;
//! the ports crate drives these functions and the adapters store what they produce.
//!
//! The centre is the item aggregate: [`item::decide`] turns a command into an event,
//! [`item::evolve`] folds an event into state, and [`history`] rebuilds any past version.
//! Messages, devices and media have their own small event types, and [`projection`]
//! derives the read models (search document, feed change, push payloads) from events.

pub mod device;
pub mod event;
pub mod history;
pub mod ids;
pub mod item;
pub mod limits;
pub mod media;
pub mod message;
pub mod projection;
pub mod time;
pub mod validate;

pub use device::{Device, DeviceEvent, Platform};
pub use event::{EventMeta, EventPayload, NewEvent, StoredEvent};
pub use ids::{CollectionName, DeviceId, EventId, IdError, ItemId, ItemKey, MediaId, MessageId, Seq, UserId, Version};
pub use item::{Item, ItemCommand, ItemHead, ItemRejection, Precondition, Visibility};
pub use limits::Limits;
pub use media::MediaObject;
pub use message::Message;
pub use time::Timestamp;
