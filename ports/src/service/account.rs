//! The caller's account: everything stored about them, exported as one ordered series of lines.
//!
//! An export reads the caller's stream a page at a time, so its memory does not grow with the stream's
//! length: first a header, then every event in the feed's shape (oldest first), then one line per media
//! object (found by reading the stream again for its declarations, rather than by holding their ids), and
//! last the number of events. A push token never appears (the feed does not show one), and nothing of
//! another user does (only the caller's stream is read).
//!
//! An erasure ([`ErasureService`]) removes the account from every port that holds something of it: the
//! search index, the media store, the push provider, and last the event store, whose erasure marker is
//! what makes every later request of the user answer `account_erased`. The marker comes last so that a
//! step that fails leaves the account live and the request can simply be made again; every step is
//! harmless to repeat, and every port refuses to re-create what it erased (a redelivered event, a late
//! upload through a URL signed before).

use rookery_domain::projection::{FeedChange, feed_change};
use rookery_domain::{EventPayload, Seq, Timestamp, UserId};

use super::{Caller, MediaService, MediaView};
use crate::{
    AppError, Clock, EventStore, Failure, IdSource, MediaError, MediaStore, PushError, PushGateway, SearchError,
    SearchIndex,
};

/// How many events one read of the stream takes.
const PAGE: usize = 200;

/// The account use cases.
#[derive(Debug, Clone)]
pub struct AccountService<S, C, I, M> {
    store: S,
    clock: C,
    media: MediaService<S, C, I, M>,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportLine {
    /// The first line: whose export, and when it was taken.
    Header {
        /// The caller.
        user_id: UserId,
        /// When the export started.
        exported_at: Timestamp,
    },
    /// An event of the caller's stream, as the feed shows it.
    Change(FeedChange),
    /// A media object of the caller's, as `GET /v1/media/{id}` shows it.
    Media(MediaView),
    /// The last line: how many events came before it.
    End {
        /// The number of [`ExportLine::Change`] lines.
        events: u64,
    },
}

/// Where an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Changes,
    Media,
    End,
    Done,
}

/// An export in progress: call [`Export::next`] until it answers `None`.
#[derive(Debug)]
pub struct Export<S, C, I, M> {
    service: AccountService<S, C, I, M>,
    user: UserId,
    phase: Phase,
    after: Seq,
    events: u64,
    pending: std::collections::VecDeque<ExportLine>,
}

impl<S: EventStore, C: Clock, I: IdSource, M: MediaStore> AccountService<S, C, I, M> {
    /// The service over the event store, the clock and the media service that signs download URLs.
    pub fn new(store: S, clock: C, media: MediaService<S, C, I, M>) -> Self {
        Self { store, clock, media }
    }

    /// `GET /v1/me/export`: the caller's export, line by line.
    pub fn export(&self, caller: &Caller) -> Export<S, C, I, M> {
        Export {
            service: self.clone(),
            user: caller.user.clone(),
            phase: Phase::Header,
            after: Seq(0),
            events: 0,
            pending: std::collections::VecDeque::new(),
        }
    }
}

impl<S: EventStore, C: Clock, I: IdSource, M: MediaStore> Export<S, C, I, M> {
    /// The next line, or `None` after the last one.
    ///
    /// # Errors
    /// `Unavailable` when the store or the media store fails; the export is then incomplete (it has no
    /// end line), and the caller must not present it as whole.
    pub async fn next(&mut self) -> Result<Option<ExportLine>, AppError> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Ok(Some(line));
            }
            match self.phase {
                Phase::Header => {
                    self.phase = Phase::Changes;
                    return Ok(Some(ExportLine::Header {
                        user_id: self.user.clone(),
                        exported_at: self.service.clock.now(),
                    }));
                }
                Phase::Changes => {
                    let page = self.read_page().await?;
                    match page.last() {
                        Some(last) => self.after = last.seq,
                        None => {
                            self.phase = Phase::Media;
                            self.after = Seq(0);
                            continue;
                        }
                    }
                    self.events += page.len() as u64;
                    self.pending
                        .extend(page.iter().map(|e| ExportLine::Change(feed_change(e))));
                }
                Phase::Media => {
                    let page = self.read_page().await?;
                    let Some(last) = page.last() else {
                        self.phase = Phase::End;
                        continue;
                    };
                    self.after = last.seq;
                    for event in page {
                        if let EventPayload::MediaDeclared(object) = event.payload {
                            let view = self.service.media.view(object).await?;
                            self.pending.push_back(ExportLine::Media(view));
                        }
                    }
                }
                Phase::End => {
                    self.phase = Phase::Done;
                    return Ok(Some(ExportLine::End { events: self.events }));
                }
                Phase::Done => return Ok(None),
            }
        }
    }

    async fn read_page(&self) -> Result<Vec<rookery_domain::StoredEvent>, AppError> {
        Ok(self
            .service
            .store
            .read_feed(&self.user, self.after, PAGE)
            .await
            .map_err(Failure::from)?)
    }
}

/// The erasure use case: `DELETE /v1/me`, and whether a user was erased.
#[derive(Debug, Clone)]
pub struct ErasureService<S, C, X, P, M> {
    store: S,
    clock: C,
    index: X,
    push: P,
    media: M,
}

fn search_failure(error: SearchError) -> Failure {
    match error {
        SearchError::Unavailable(failure) => failure,
        SearchError::BadCursor => Failure::permanent("the search index refused an erasure as a bad cursor"),
    }
}

fn push_failure(error: PushError) -> Failure {
    match error {
        PushError::Unavailable(failure) => failure,
        PushError::Rejected(why) => Failure::permanent(format!("the push provider refused an erasure: {why}")),
    }
}

fn media_failure(error: MediaError) -> Failure {
    match error {
        MediaError::Unavailable(failure) => failure,
    }
}

impl<S: EventStore, C: Clock, X: SearchIndex, P: PushGateway, M: MediaStore> ErasureService<S, C, X, P, M> {
    /// The service over every port that holds something of an account.
    pub fn new(store: S, clock: C, index: X, push: P, media: M) -> Self {
        Self {
            store,
            clock,
            index,
            push,
            media,
        }
    }

    /// `DELETE /v1/me`: erases the caller's account everywhere, and answers when it was erased.
    ///
    /// The search index goes first (its documents, and any later change of the caller's), then the media
    /// bytes, then the push endpoints of the caller's devices, and last the event store (stream,
    /// projections, idempotency records), which leaves the erasure marker. Messages the caller sent stay
    /// in their recipients' streams.
    ///
    /// # Errors
    /// `Erased` when the caller was already erased (nothing to do); `Unavailable` when a step failed:
    /// then the account is still live, maybe without some of its index documents, media or endpoints,
    /// and the request may be made again.
    pub async fn erase(&self, caller: &Caller) -> Result<Timestamp, AppError> {
        let user = &caller.user;
        if self.erased(user).await?.is_some() {
            return Err(AppError::Erased);
        }
        self.index.erase_owner(user).await.map_err(search_failure)?;
        self.media.erase_owner(user).await.map_err(media_failure)?;
        let devices = self.store.devices(user).await.map_err(Failure::from)?;
        for device in devices.values() {
            self.push
                .delete(user, &device.device_id, &device.endpoint)
                .await
                .map_err(push_failure)?;
        }
        self.push.forget_owner(user).await.map_err(push_failure)?;
        let at = self
            .store
            .erase_owner(user, self.clock.now())
            .await
            .map_err(Failure::from)?;
        // A device registered while the steps above ran is gone with the stream; what the gateway
        // recorded for it goes too.
        if let Err(error) = self.push.forget_owner(user).await {
            tracing::warn!(%user, error = %push_failure(error), "an erased user's pushes could not all be forgotten");
        }
        tracing::info!(%user, %at, "account erased");
        Ok(at)
    }

    /// The event store whose markers say who was erased.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// When `user`'s account was erased, `None` if it never was.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot tell.
    pub async fn erased(&self, user: &UserId) -> Result<Option<Timestamp>, AppError> {
        Ok(self.store.erased(user).await.map_err(Failure::from)?)
    }
}
