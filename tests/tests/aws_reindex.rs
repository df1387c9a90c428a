//! `rookery aws reindex` against moto's DynamoDB and the OpenSearch and CloudSearch stand-ins: a full
//! rebuild and alias switch, changes made during the rebuild, an interruption and its resumption, a
//! second run, a verification that refuses a wrong index, the CloudSearch repair, and the binary itself.
//!
//! Every test has its own table and its own stand-in. Scan pages are kept small so a rebuild of a few
//! dozen items crosses many pages, checkpoints and hooks.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::{Command, Output};

use rookery_adapters_aws::cloudsearch::document_id;
use rookery_adapters_aws::dynamo::ItemHeadRow;
use rookery_adapters_aws::{AwsClients, CloudSearchIndex, DynamoStore, OpenSearchIndex, OpenSearchService};
use rookery_domain::projection::IndexChange;
use rookery_domain::{ItemKey, UserId, Version, Visibility};
use rookery_entrypoints::aws::reindex::{
    Flow, Progress, Quiet, ReindexError, ReindexHooks, ReindexOptions, Stage, TableSource, opensearch_checkpoint_name,
    run_cloudsearch, run_opensearch,
};
use rookery_ports::{AppendBatch, EventStore, SearchIndex};
use rookery_tests::aws::cloudsearch_fake::FakeCloudSearch;
use rookery_tests::aws::opensearch_fake::FakeOpenSearch;
use rookery_tests::aws::{cloudsearch_index, moto, opensearch_index};
use rookery_tests::fixtures::{at, item_payload, key, new_event, object, user};
use rookery_tests::http::rookery_binary;
use serde_json::json;

const ALIAS: &str = "rookery-items";

struct Table {
    clients: AwsClients,
    store: DynamoStore,
    source: TableSource,
}

async fn table() -> Table {
    let clients = moto::clients().await.expect("moto");
    clients.create_table().await.expect("a table");
    let store = clients
        .event_store()
        .with_contention(rookery_tests::aws::moto_contention());
    let source = TableSource {
        heads: clients.item_heads().with_page_rows(7),
        store: store.clone(),
    };
    Table { clients, store, source }
}

impl Table {
    /// Writes `text` as item `id` of `owner` (`None` deletes it), returning its head.
    async fn write(&self, owner: &str, id: &str, text: Option<&str>) -> ItemHeadRow {
        let owner = user(owner).unwrap();
        let key = key("notes", id).unwrap();
        let now = self.store.item_head(&owner, &key).await.expect("the head").version;
        let payload = item_payload(
            &key,
            Version(now.0 + 1),
            text.map(|t| object(json!({"text": t}))),
            Visibility::Public,
            now.0 == 0,
            at(0),
        );
        let event = new_event(payload, rookery_tests::fixtures::wall_clock()).unwrap();
        self.store
            .append(AppendBatch {
                owner: owner.clone(),
                expected_seq: None,
                item_versions: vec![(key.clone(), now)],
                events: vec![event],
                idempotency: None,
            })
            .await
            .expect("appended");
        self.head(&owner, &key).await.expect("written")
    }

    async fn head(&self, owner: &UserId, key: &ItemKey) -> Option<ItemHeadRow> {
        let wanted = [(owner.clone(), key.clone())];
        self.source.heads.get(&wanted).await.expect("read").remove(&wanted[0])
    }

    /// Every head of the table.
    async fn heads(&self) -> Vec<ItemHeadRow> {
        let mut heads = Vec::new();
        let mut after = None;
        loop {
            let page = self.source.heads.page(after.as_ref()).await.expect("a page");
            heads.extend(page.heads);
            match page.next {
                Some(next) => after = Some(next),
                None => return heads,
            }
        }
    }
}

/// Writes `n` items over three owners, replaces some, deletes some; returns their heads.
async fn fill(table: &Table, n: usize) -> Vec<ItemHeadRow> {
    let mut heads = Vec::new();
    for i in 0..n {
        let owner = ["alice", "bob", "carol"][i % 3];
        let id = format!("n{i}");
        let mut head = table.write(owner, &id, Some(&format!("note {i} tea"))).await;
        if i % 4 == 1 {
            head = table.write(owner, &id, Some(&format!("note {i} coffee"))).await;
        }
        if i % 5 == 2 {
            head = table.write(owner, &id, None).await;
        }
        heads.push(head);
    }
    heads
}

/// The indexer's work: each head written through the alias.
async fn index_through_alias(index: &OpenSearchIndex, heads: &[ItemHeadRow]) {
    let changes: Vec<IndexChange> = heads.iter().map(ItemHeadRow::change).collect();
    index.apply(&changes).await.expect("indexed");
}

/// Checks that the index behind `target` holds exactly the table's heads: each at its version and
/// state, and nothing else live.
async fn assert_matches_table(fake: &FakeOpenSearch, target: &str, table: &Table) {
    let heads = table.heads().await;
    let documents = fake.documents(target);
    for head in &heads {
        let id = document_id(&head.owner, &head.key);
        let found = documents.iter().find(|d| d.id == id);
        match (&head.item, found) {
            (Some(_), Some(doc)) => {
                assert_eq!(doc.source["version"], head.version.0, "{id}");
                assert_eq!(doc.source["state"], "live", "{id}");
            }
            (Some(_), None) => panic!("{}/{} missing from {target}", head.owner, head.key.id),
            (None, Some(doc)) => assert_eq!(doc.source["state"], "deleted", "{id}"),
            (None, None) => {}
        }
    }
    let live_heads = heads.iter().filter(|h| h.item.is_some()).count();
    let live_docs = documents.iter().filter(|d| d.source["state"] == "live").count();
    assert_eq!(live_docs, live_heads, "no other live document in {target}");
}

async fn opensearch(table: &Table) -> (FakeOpenSearch, OpenSearchIndex) {
    let _ = table;
    opensearch_index(OpenSearchService::Domain).await.expect("a stand-in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_reindex_rebuilds_switches_the_alias_and_a_second_run_is_harmless() {
    let table = table().await;
    let heads = fill(&table, 24).await;
    let (fake, index) = opensearch(&table).await;
    index_through_alias(&index, &heads).await;
    // The index in use lost a document (a dead-lettered record): the rebuild brings it back.
    let lost = heads.iter().find(|h| h.item.is_some()).unwrap();
    assert!(fake.remove("rookery-items-1", &document_id(&lost.owner, &lost.key)));

    let report = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await
    .expect("rebuilt");
    let checkpoint = &report.checkpoint;
    assert_eq!(checkpoint.stage, Stage::Done);
    assert_eq!(checkpoint.target.as_deref(), Some("rookery-items-2"));
    assert_eq!(checkpoint.old.as_deref(), Some("rookery-items-1"));
    assert_eq!(checkpoint.counts.built, 24);
    assert_eq!(checkpoint.counts.checked, 24);
    assert_eq!(checkpoint.counts.behind, 0);
    assert_eq!(fake.alias(ALIAS), Some(vec!["rookery-items-2".to_owned()]));
    assert_matches_table(&fake, ALIAS, &table).await;
    let (strict, _) = fake
        .mapping("rookery-items-2")
        .expect("created with the adapter's mappings");
    assert!(strict);
    assert_eq!(
        fake.indices(),
        ["rookery-items-1", "rookery-items-2"],
        "the old index is kept"
    );

    // A second run finds the rebuild finished and changes nothing.
    let before = fake.documents("rookery-items-2");
    let again = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await
    .expect("ran again");
    assert!(again.already_done);
    assert_eq!(fake.indices(), ["rookery-items-1", "rookery-items-2"]);
    assert_eq!(fake.documents("rookery-items-2"), before);

    // --delete-old deletes the old index, once; --fresh rebuilds into the next generation.
    let options = ReindexOptions {
        delete_old: true,
        ..ReindexOptions::default()
    };
    let deleted = run_opensearch(&index, &table.source, &table.source, options, &mut Quiet)
        .await
        .expect("deleted the old index");
    assert!(deleted.checkpoint.old_deleted);
    assert_eq!(fake.indices(), ["rookery-items-2"]);
    run_opensearch(&index, &table.source, &table.source, options, &mut Quiet)
        .await
        .expect("nothing left to delete");
    let fresh = ReindexOptions {
        fresh: true,
        ..ReindexOptions::default()
    };
    let third = run_opensearch(&index, &table.source, &table.source, fresh, &mut Quiet)
        .await
        .expect("a fresh rebuild");
    assert_eq!(third.checkpoint.target.as_deref(), Some("rookery-items-3"));
    assert_eq!(fake.alias(ALIAS), Some(vec!["rookery-items-3".to_owned()]));
    assert_matches_table(&fake, ALIAS, &table).await;
}

/// Hooks that act as the indexer function does while the rebuild runs: at chosen pages, they change
/// items in the table and write the changes through the alias.
struct WritingIndexer<'a> {
    table: &'a Table,
    index: &'a OpenSearchIndex,
    done: Vec<Stage>,
    written: Vec<ItemHeadRow>,
}

impl ReindexHooks for WritingIndexer<'_> {
    fn progress(&mut self, _progress: &Progress) {}

    async fn after_page(&mut self, stage: Stage, page: u64) -> Flow {
        if page != 2 || self.done.contains(&stage) {
            return Flow::Continue;
        }
        self.done.push(stage);
        let name = stage.as_str().replace('-', "");
        // A new item, a change to every early item (most already scanned), and a delete.
        let mut changed = vec![
            self.table
                .write("dave", &format!("new-{name}"), Some("fresh kettle"))
                .await,
        ];
        for i in [0, 1, 3] {
            let owner = ["alice", "bob", "carol"][i % 3];
            changed.push(
                self.table
                    .write(owner, &format!("n{i}"), Some(&format!("changed during {name}")))
                    .await,
            );
        }
        let gone = match stage {
            Stage::Build => "n4",
            Stage::Verify => "n5",
            _ => "n6",
        };
        let owner = ["alice", "bob", "carol"][gone[1..].parse::<usize>().unwrap() % 3];
        changed.push(self.table.write(owner, gone, None).await);
        index_through_alias(self.index, &changed).await;
        self.written.extend(changed);
        Flow::Continue
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_reindex_keeps_every_change_made_while_it_runs() {
    let table = table().await;
    let heads = fill(&table, 15).await;
    let (fake, index) = opensearch(&table).await;
    index_through_alias(&index, &heads).await;
    let mut hooks = WritingIndexer {
        table: &table,
        index: &index,
        done: Vec::new(),
        written: Vec::new(),
    };
    let report = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut hooks,
    )
    .await
    .expect("rebuilt while the indexer wrote");
    assert_eq!(
        hooks.done,
        [Stage::Build, Stage::Verify, Stage::CatchUp],
        "changes came during the build, the verification and the catch-up"
    );
    assert!(
        report.checkpoint.counts.behind > 0,
        "the verification saw changes made after the build read them, and let them be: {:?}",
        report.checkpoint.counts
    );
    assert_eq!(fake.alias(ALIAS), Some(vec!["rookery-items-2".to_owned()]));
    assert_matches_table(&fake, ALIAS, &table).await;
    for head in &hooks.written {
        let now = table.head(&head.owner, &head.key).await.unwrap();
        let doc = fake
            .document("rookery-items-2", &document_id(&head.owner, &head.key))
            .expect("every changed item is in the new index");
        assert_eq!(doc.source["version"], now.version.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_serverless_reindex_keeps_changes_made_while_it_runs_with_conditional_upserts() {
    // A Serverless collection (`aoss`): no external versions, so every write of the rebuild and of the
    // indexer is the conditional upsert (decision 0005), and no `refresh` parameter is sent.
    let table = table().await;
    let heads = fill(&table, 15).await;
    let (fake, index) = opensearch_index(OpenSearchService::Serverless)
        .await
        .expect("a collection's stand-in");
    index_through_alias(&index, &heads).await;
    let mut hooks = WritingIndexer {
        table: &table,
        index: &index,
        done: Vec::new(),
        written: Vec::new(),
    };
    let report = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut hooks,
    )
    .await
    .expect("rebuilt the collection's index while the indexer wrote");
    assert_eq!(hooks.done, [Stage::Build, Stage::Verify, Stage::CatchUp]);
    assert_eq!(report.checkpoint.stage, Stage::Done);
    assert_eq!(report.checkpoint.old.as_deref(), Some("rookery-items-1"));
    assert_eq!(fake.alias(ALIAS), Some(vec!["rookery-items-2".to_owned()]));
    assert_matches_table(&fake, ALIAS, &table).await;

    // The indexer delivering the first, older changes again (at-least-once) changes nothing.
    index_through_alias(&index, &heads).await;
    assert_matches_table(&fake, ALIAS, &table).await;
    let bulks: Vec<String> = fake.requests().into_iter().filter(|r| r.contains("/_bulk")).collect();
    assert!(!bulks.is_empty());
    assert!(
        bulks
            .iter()
            .all(|r| !r.contains("refresh") && !r.contains("version_type")),
        "{bulks:?}"
    );

    // A second run finds the rebuild finished.
    let again = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await
    .expect("ran again");
    assert!(again.already_done);
}

/// Hooks that stop the rebuild, as a Ctrl-C would, after the first page by which a stage has handled
/// at least this many items.
struct StopAt(Stage, u64, u64);

impl ReindexHooks for StopAt {
    fn progress(&mut self, progress: &Progress) {
        if progress.stage == self.0 {
            self.2 = progress.heads;
        }
    }

    async fn after_page(&mut self, stage: Stage, _page: u64) -> Flow {
        if stage == self.0 && self.2 >= self.1 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_reindex_resumes_from_its_checkpoint_after_an_interruption() {
    let table = table().await;
    let heads = fill(&table, 20).await;
    let (fake, index) = opensearch(&table).await;
    index_through_alias(&index, &heads).await;

    let stopped = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut StopAt(Stage::Build, 5, 0),
    )
    .await;
    assert!(
        matches!(stopped, Err(ReindexError::Interrupted(Stage::Build))),
        "{stopped:?}"
    );
    let saved = table
        .source
        .heads
        .checkpoint(&opensearch_checkpoint_name(ALIAS))
        .await
        .unwrap()
        .expect("a checkpoint in the table");
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["stage"], "build");
    assert!(saved["position"].is_array(), "the scan position is kept: {saved}");
    let built_before = saved["counts"]["built"].as_u64().unwrap();
    assert!(built_before > 0 && built_before < 20, "{saved}");
    assert_eq!(
        fake.alias(ALIAS),
        Some(vec!["rookery-items-1".to_owned()]),
        "not switched"
    );

    // Interrupted again during the catch-up, after the switch.
    let stopped = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut StopAt(Stage::CatchUp, 3, 0),
    )
    .await;
    assert!(
        matches!(stopped, Err(ReindexError::Interrupted(Stage::CatchUp))),
        "{stopped:?}"
    );
    assert_eq!(fake.alias(ALIAS), Some(vec!["rookery-items-2".to_owned()]));

    let report = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await
    .expect("resumed");
    assert_eq!(
        report.checkpoint.target.as_deref(),
        Some("rookery-items-2"),
        "the same target"
    );
    assert_eq!(
        report.checkpoint.counts.built, 20,
        "the build went on from its position, not from the start"
    );
    assert_eq!(fake.indices(), ["rookery-items-1", "rookery-items-2"]);
    assert_matches_table(&fake, ALIAS, &table).await;

    // A checkpoint naming a deleted index stops the command rather than guessing.
    let fresh = ReindexOptions {
        fresh: true,
        ..ReindexOptions::default()
    };
    let _ = run_opensearch(
        &index,
        &table.source,
        &table.source,
        fresh,
        &mut StopAt(Stage::Build, 0, 0),
    )
    .await;
    let next = index.generation(3);
    index
        .delete_generation(&next)
        .await
        .expect("deleted under the command's feet");
    let refused = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await;
    assert!(
        matches!(&refused, Err(ReindexError::MissingIndex(name)) if *name == next),
        "{refused:?}"
    );
}

/// Hooks that corrupt the new index as its verification begins.
struct Corrupt<'a> {
    fake: &'a FakeOpenSearch,
    heads: &'a [ItemHeadRow],
    done: bool,
}

impl ReindexHooks for Corrupt<'_> {
    fn progress(&mut self, progress: &Progress) {
        if progress.stage != Stage::Verify || self.done {
            return;
        }
        self.done = true;
        let target = "rookery-items-2";
        let live: Vec<&ItemHeadRow> = self.heads.iter().filter(|h| h.item.is_some()).collect();
        // A live item missing.
        assert!(self.fake.remove(target, &document_id(&live[0].owner, &live[0].key)));
        // A live item shown as deleted, at its version.
        let id = document_id(&live[1].owner, &live[1].key);
        let mut doc = self.fake.document(target, &id).unwrap();
        doc.source.insert("state".into(), json!("deleted"));
        assert!(self.fake.tamper(target, &id, doc.version, doc.source));
        // A deleted item present and live.
        let deleted = self.heads.iter().find(|h| h.item.is_none()).unwrap();
        let id = document_id(&deleted.owner, &deleted.key);
        let mut live_again = self
            .fake
            .document(target, &document_id(&live[2].owner, &live[2].key))
            .unwrap();
        live_again.source.insert("doc_id".into(), json!(id));
        live_again.source.insert("owner".into(), json!(deleted.owner.as_str()));
        live_again
            .source
            .insert("item_id".into(), json!(deleted.key.id.as_str()));
        live_again.source.insert("version".into(), json!(deleted.version.0));
        assert!(
            self.fake
                .tamper(target, &id, deleted.version.0, live_again.source.clone())
        );
        // A live document of no item.
        let stray = "f".repeat(64);
        live_again.source.insert("doc_id".into(), json!(stray));
        live_again.source.insert("item_id".into(), json!("nowhere"));
        assert!(self.fake.tamper(target, &stray, 1, live_again.source));
    }

    async fn after_page(&mut self, _stage: Stage, _page: u64) -> Flow {
        Flow::Continue
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_reindex_refuses_to_switch_when_the_new_index_disagrees_with_the_table() {
    let table = table().await;
    let heads = fill(&table, 12).await;
    let (fake, index) = opensearch(&table).await;
    index_through_alias(&index, &heads).await;
    let mut hooks = Corrupt {
        fake: &fake,
        heads: &heads,
        done: false,
    };
    let refused = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut hooks,
    )
    .await;
    let Err(ReindexError::Disagrees {
        target,
        count,
        problems,
    }) = refused
    else {
        panic!("not refused: {refused:?}");
    };
    assert_eq!(target, "rookery-items-2");
    assert_eq!(count, 4, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("missing")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("no such item")), "{problems:?}");
    assert_eq!(
        fake.alias(ALIAS),
        Some(vec!["rookery-items-1".to_owned()]),
        "the alias stays on the index in use"
    );
    // Run again: the checkpoint still says verify, and the index still disagrees.
    let again = run_opensearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await;
    assert!(matches!(again, Err(ReindexError::Disagrees { .. })), "{again:?}");
    assert_eq!(fake.alias(ALIAS), Some(vec!["rookery-items-1".to_owned()]));
    // A fresh rebuild builds a good generation and switches to it.
    let fresh = ReindexOptions {
        fresh: true,
        ..ReindexOptions::default()
    };
    let report = run_opensearch(&index, &table.source, &table.source, fresh, &mut Quiet)
        .await
        .expect("a fresh rebuild");
    assert_eq!(report.checkpoint.target.as_deref(), Some("rookery-items-3"));
    assert_matches_table(&fake, ALIAS, &table).await;
}

async fn cloudsearch(table: &Table) -> (FakeCloudSearch, CloudSearchIndex) {
    let _ = table;
    cloudsearch_index().await.expect("a fake domain")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudsearch_reindex_uploads_every_item_again_and_deletes_what_should_not_be_there() {
    let table = table().await;
    let heads = fill(&table, 15).await;
    let (fake, index) = cloudsearch(&table).await;
    // The domain misses the last five items, and holds a live document of an item that is not in the table.
    let changes: Vec<IndexChange> = heads[..10].iter().map(ItemHeadRow::change).collect();
    index.apply(&changes).await.expect("indexed");
    let mut stray = heads.iter().find(|h| h.item.is_some()).unwrap().clone();
    stray.key = key("notes", "stray").unwrap();
    if let Some(item) = &mut stray.item {
        item.id = stray.key.id.clone();
    }
    index.apply(&[stray.change()]).await.expect("a stray document");
    let stray_id = document_id(&stray.owner, &stray.key);
    assert!(fake.document(&stray_id).is_some());

    let report = run_cloudsearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await
    .expect("repaired");
    assert_eq!(report.checkpoint.stage, Stage::Done);
    assert_eq!(report.checkpoint.counts.deleted, 1);
    assert!(fake.document(&stray_id).is_none(), "the document of no item is gone");
    for head in table.heads().await {
        let doc = fake
            .document(&document_id(&head.owner, &head.key))
            .expect("every item uploaded");
        assert_eq!(doc["version"], head.version.0);
        assert_eq!(doc["state"], if head.item.is_some() { "live" } else { "deleted" });
    }
    assert_eq!(fake.len(), 15);
    let again = run_cloudsearch(
        &index,
        &table.source,
        &table.source,
        ReindexOptions::default(),
        &mut Quiet,
    )
    .await
    .expect("ran again");
    assert!(again.already_done);
    assert_eq!(fake.len(), 15);
}

fn run_rookery(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    Command::new(rookery_binary())
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reindexes_opensearch_and_names_what_is_missing() {
    let table = table().await;
    let heads = fill(&table, 9).await;
    let (fake, index) = opensearch(&table).await;
    index_through_alias(&index, &heads).await;
    let moto = moto::moto().expect("moto");
    let mut env: BTreeMap<String, String> = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ROOKERY_TABLE", table.clients.config().table.as_str()),
        ("ROOKERY_SEARCH", "opensearch"),
        ("ROOKERY_OPENSEARCH_ENDPOINT", fake.endpoint.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let run = |args: &'static [&'static str], env: BTreeMap<String, String>| {
        tokio::task::spawn_blocking(move || run_rookery(args, &env))
    };

    let first = run(&["aws", "reindex", "--scan-rows", "5"], env.clone()).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&first.stdout).into_owned(),
        String::from_utf8_lossy(&first.stderr).into_owned(),
    );
    assert!(first.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("rebuilt rookery-items-2"), "{stdout}");
    assert!(stdout.contains("rookery-items-1 is kept"), "{stdout}");
    for stage in ["build:", "verify:", "catch-up:"] {
        assert!(stderr.contains(stage), "progress lines on stderr: {stderr}");
    }
    assert_eq!(fake.alias(ALIAS), Some(vec!["rookery-items-2".to_owned()]));
    assert_matches_table(&fake, ALIAS, &table).await;

    let second = run(&["aws", "reindex", "--delete-old"], env.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{stdout}");
    assert!(
        stdout.contains("nothing to do") && stdout.contains("rookery-items-1 was deleted"),
        "{stdout}"
    );
    assert_eq!(fake.indices(), ["rookery-items-2"]);

    // What is missing is named, with no panic.
    env.insert("ROOKERY_TABLE".into(), "no-such-table".into());
    let missing = run(&["aws", "reindex"], env.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr).into_owned();
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-table does not exist"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    env.remove("ROOKERY_OPENSEARCH_ENDPOINT");
    let no_endpoint = run(&["aws", "reindex"], env.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&no_endpoint.stderr).into_owned();
    assert!(stderr.contains("ROOKERY_OPENSEARCH_ENDPOINT is required"), "{stderr}");
    env.remove("ROOKERY_SEARCH");
    env.remove("ROOKERY_TABLE");
    let nothing = run(&["aws", "reindex"], env.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&nothing.stderr).into_owned();
    assert!(stderr.contains("ROOKERY_TABLE is not set"), "{stderr}");
    assert!(
        !stderr.contains("ROOKERY_BUCKET"),
        "a rebuild needs no bucket: {stderr}"
    );
    env.insert("ROOKERY_TABLE".into(), "t".into());
    let memory = run(&["aws", "reindex"], env.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&memory.stderr).into_owned();
    assert!(
        stderr.contains("ROOKERY_SEARCH must be opensearch or cloudsearch"),
        "{stderr}"
    );
    assert!(!memory.status.success());
}
