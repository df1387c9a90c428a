//! The caller's account: everything stored about them, exported as one ordered series of lines.
//!
//! An export reads the caller's stream a page at a time, so its memory does not grow with the stream's
//! length: first a header, then every event in the feed's shape (oldest first), then one line per media
//! object (found by reading the stream again for its declarations, rather than by holding their ids), and
//! last the number of events. A push token never appears (the feed does not show one), and nothing of
//! another user does (only the caller's stream is read).
//!
//! An erasure ([`ErasureService`]) removes the account from every port that holds something of it: the
//! search index, the media store, the push provider, the identity provider's directory, and last the
//! event store, whose erasure marker is what makes every later request of the user answer
//! `account_erased`. The marker comes last so that a step that fails leaves the account live and the
//! request can simply be made again; every step is harmless to repeat, and every port refuses to
//! re-create what it erased (a redelivered event, a late upload through a URL signed before).
//!
//! A deployment whose API cannot wait for all of that (Lambda, behind API Gateway's 29 seconds) turns
//! it around: [`ErasureRequest`] writes the marker first, which already hides everything of the
//! account, and a consumer of the marker runs [`ErasureService::finish`] for the rest, again and again
//! until it is done.

use rookery_domain::device::Devices;
use rookery_domain::projection::{FeedChange, feed_change};
use rookery_domain::{EventPayload, Seq, Timestamp, UserId};

use super::{Caller, MediaService, MediaView};
use crate::store::PurgeProgress;
use crate::{
    AppError, Clock, EventStore, Failure, IdSource, IdentityDirectory, MediaError, MediaStore, NoDirectory, PushError,
    PushGateway, SearchError, SearchIndex,
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

/// Erasing the caller's account, as `DELETE /v1/me` asks: [`ErasureService`] does all of it before it
/// answers, [`ErasureRequest`] only writes the marker and leaves the rest to [`ErasureService::finish`].
pub trait EraseAccount: Clone + Send + Sync + 'static {
    /// Erases (or starts erasing) the caller's account, and answers when it was erased; from then on
    /// nothing of the account is readable and every request of the caller answers `account_erased`.
    ///
    /// # Errors
    /// `Erased` when the caller was already erased; `Unavailable` when it could not be done: the
    /// account is then still live, and the request may be made again.
    fn erase(&self, caller: &Caller) -> impl std::future::Future<Output = Result<Timestamp, AppError>> + Send;
}

/// The erasure use case: `DELETE /v1/me`, whether a user was erased, and the finishing of an erasure
/// whose marker was written by an [`ErasureRequest`].
#[derive(Debug, Clone)]
pub struct ErasureService<S, C, X, P, M, D = NoDirectory> {
    store: S,
    clock: C,
    index: X,
    push: P,
    media: M,
    directory: D,
}

/// How far one run of [`ErasureService::finish`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Nothing of the account is left anywhere but the erasure marker.
    Done {
        /// Rows of the event store this run deleted.
        deleted: u64,
    },
    /// The deadline came before the event store's purge was done; run it again to go on.
    Unfinished {
        /// Rows of the event store this run deleted.
        deleted: u64,
    },
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

impl<S, C, X, P, M> ErasureService<S, C, X, P, M> {
    /// The service over every port that holds something of an account, for an identity provider that
    /// keeps no user records Rookery administers ([`NoDirectory`]; see [`ErasureService::with_directory`]).
    pub fn new(store: S, clock: C, index: X, push: P, media: M) -> Self {
        Self {
            store,
            clock,
            index,
            push,
            media,
            directory: NoDirectory,
        }
    }
}

impl<S, C, X, P, M, D> ErasureService<S, C, X, P, M, D> {
    /// The same service deleting the erased user from `directory` too (the Cognito user pool).
    pub fn with_directory<D2>(self, directory: D2) -> ErasureService<S, C, X, P, M, D2> {
        ErasureService {
            store: self.store,
            clock: self.clock,
            index: self.index,
            push: self.push,
            media: self.media,
            directory,
        }
    }
}

impl<S, C, X, P, M, D> ErasureService<S, C, X, P, M, D>
where
    S: EventStore,
    C: Clock,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
    D: IdentityDirectory,
{
    /// `DELETE /v1/me`: erases the caller's account everywhere, and answers when it was erased.
    ///
    /// The search index goes first (its documents, and any later change of the caller's), then the media
    /// bytes, then the push endpoints of the caller's devices, then the user in the identity provider's
    /// directory, and last the event store (stream, projections, idempotency records), which leaves the
    /// erasure marker. Messages the caller sent stay in their recipients' streams.
    ///
    /// # Errors
    /// `Erased` when the caller was already erased (nothing to do); `Unavailable` when a step failed:
    /// then the account is still live, maybe without some of its index documents, media, endpoints or
    /// its directory entry, and the request may be made again.
    pub async fn erase(&self, caller: &Caller) -> Result<Timestamp, AppError> {
        let user = &caller.user;
        if self.erased(user).await?.is_some() {
            return Err(AppError::Erased);
        }
        self.index.erase_owner(user).await.map_err(search_failure)?;
        self.media.erase_owner(user).await.map_err(media_failure)?;
        let devices = self.store.devices(user).await.map_err(Failure::from)?;
        self.delete_endpoints(user, &devices).await?;
        self.directory.delete_user(user).await?;
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

    /// Finishes the erasure of `user`, whose marker an [`ErasureRequest`] wrote: their search documents,
    /// media bytes, the push endpoints of their devices, their directory entry, then what is left of their
    /// rows in the event store ([`EventStore::purge_erased`]), and last the search index once more, for a
    /// change an indexer applied while this ran. Stops with [`Finished::Unfinished`] when `deadline`
    /// comes before the purge is done.
    ///
    /// Every step is harmless to repeat, so a run that failed or stopped is simply run again (a consumer
    /// of the marker's stream record reports it failed until this answers [`Finished::Done`]).
    ///
    /// # Errors
    /// `Unavailable` when a step failed, or permanently when `user` has no erasure marker (nothing is
    /// touched: this never erases a live account).
    pub async fn finish(&self, user: &UserId, deadline: Option<tokio::time::Instant>) -> Result<Finished, AppError> {
        if self.erased(user).await?.is_none() {
            return Err(Failure::permanent(format!(
                "refusing to finish erasing {user}: the account has no erasure marker"
            ))
            .into());
        }
        self.index.erase_owner(user).await.map_err(search_failure)?;
        self.media.erase_owner(user).await.map_err(media_failure)?;
        let devices = self.store.erased_devices(user).await.map_err(Failure::from)?;
        self.delete_endpoints(user, &devices).await?;
        self.directory.delete_user(user).await?;
        let deleted = match self.store.purge_erased(user, deadline).await.map_err(Failure::from)? {
            PurgeProgress::Done { deleted } => deleted,
            PurgeProgress::Unfinished { deleted } => {
                tracing::info!(%user, deleted, "erasure not finished before the deadline");
                return Ok(Finished::Unfinished { deleted });
            }
        };
        // An indexer may have applied one of the user's events between the first erasure of the index
        // and the marker's check; the index refuses the user's changes from now on, so this is the last.
        self.index.erase_owner(user).await.map_err(search_failure)?;
        tracing::info!(%user, deleted, "account erasure finished");
        Ok(Finished::Done { deleted })
    }

    /// Deletes the push endpoints of `devices`, and whatever else the gateway keeps of `user`.
    async fn delete_endpoints(&self, user: &UserId, devices: &Devices) -> Result<(), Failure> {
        for device in devices.values() {
            self.push
                .delete(user, &device.device_id, &device.endpoint)
                .await
                .map_err(push_failure)?;
        }
        self.push.forget_owner(user).await.map_err(push_failure)
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

impl<S, C, X, P, M, D> EraseAccount for ErasureService<S, C, X, P, M, D>
where
    S: EventStore,
    C: Clock,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
    D: IdentityDirectory,
{
    fn erase(&self, caller: &Caller) -> impl std::future::Future<Output = Result<Timestamp, AppError>> + Send {
        ErasureService::erase(self, caller)
    }
}

/// `DELETE /v1/me` for a deployment that finishes erasures later: writes only the erasure marker (with
/// an event store that defers its purge, such as DynamoDB on Lambda, nothing more), after which nothing
/// of the account is readable, and answers. A consumer of the marker runs [`ErasureService::finish`].
///
/// It needs no search index, media store, push gateway or identity directory, so the function that
/// serves it needs no permission to delete from them.
#[derive(Debug, Clone)]
pub struct ErasureRequest<S, C> {
    store: S,
    clock: C,
}

impl<S: EventStore, C: Clock> ErasureRequest<S, C> {
    /// The request over the event store (whose marker it writes) and the clock.
    pub fn new(store: S, clock: C) -> Self {
        Self { store, clock }
    }

    /// Writes the caller's erasure marker and answers its time.
    ///
    /// # Errors
    /// `Erased` when the caller was already erased; `Unavailable` when the store failed (no marker was
    /// written, and the request may be made again).
    pub async fn erase(&self, caller: &Caller) -> Result<Timestamp, AppError> {
        let user = &caller.user;
        if self.store.erased(user).await.map_err(Failure::from)?.is_some() {
            return Err(AppError::Erased);
        }
        let at = self
            .store
            .erase_owner(user, self.clock.now())
            .await
            .map_err(Failure::from)?;
        tracing::info!(%user, %at, "account erasure requested; the rest is finished from the stream");
        Ok(at)
    }
}

impl<S: EventStore, C: Clock> EraseAccount for ErasureRequest<S, C> {
    fn erase(&self, caller: &Caller) -> impl std::future::Future<Output = Result<Timestamp, AppError>> + Send {
        ErasureRequest::erase(self, caller)
    }
}
