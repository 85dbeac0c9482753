use super::*;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn create_update_delete_follow_revisions() {
    let (_d, s) = open();
    let a = s.create("/r/a", b"1".to_vec()).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert_eq!(s.create("/r/a", b"x".to_vec()).await, Err(StoreError::AlreadyExists("/r/a".into())));
    let stale = s.update("/r/a", b"2".to_vec(), 0).await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })));
    let b = s.update("/r/a", b"2".to_vec(), 1).await.unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (1, 2));
    assert_eq!(&*s.get("/r/a").await.unwrap().unwrap().value, b"2");
    let d = s.delete("/r/a", Some(2)).await.unwrap();
    assert_eq!((d.mod_revision, &*d.value), (3, &b"2"[..]));
    assert_eq!(s.get("/r/a").await.unwrap(), None);
    assert_eq!(s.current_revision(), 3);
    let again = s.create("/r/a", b"3".to_vec()).await.unwrap();
    assert_eq!(again.create_revision, 4);
}

#[tokio::test]
async fn list_pages_and_reads_old_revisions() {
    let (_d, s) = open();
    for i in 0..10 {
        s.create(&format!("/r/k{i}"), vec![i]).await.unwrap();
    }
    s.create("/rx", b"outside".to_vec()).await.unwrap();
    let page = s.list("/r/", None, 4, None).await.unwrap();
    assert_eq!(page.items.len(), 4);
    assert_eq!(page.remaining, 6);
    let at = page.revision;
    s.delete("/r/k5", None).await.unwrap();
    s.update("/r/k6", b"new".to_vec(), 7).await.unwrap();
    let next = s.list("/r/", Some(&page.items[3].key), 0, Some(at)).await.unwrap();
    let keys: Vec<_> = next.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/r/k4", "/r/k5", "/r/k6", "/r/k7", "/r/k8", "/r/k9"]);
    assert_eq!(&*next.items[2].value, &[6u8][..]);
    let now = s.list("/r/", None, 0, None).await.unwrap();
    assert_eq!(now.items.len(), 9);
}

#[tokio::test]
async fn watch_replays_history_then_goes_live() {
    let (_d, s) = open();
    s.create("/r/a", b"1".to_vec()).await.unwrap();
    s.create("/r/b", b"1".to_vec()).await.unwrap();
    s.create("/other", b"1".to_vec()).await.unwrap();
    let mut w = s.watch("/r/", 1).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!((first.kind, first.kv.key.as_str()), (EventKind::Create, "/r/b"));
    s.update("/r/a", b"2".to_vec(), 1).await.unwrap();
    s.delete("/r/b", None).await.unwrap();
    let up = w.next().await.unwrap().unwrap();
    assert_eq!((up.kind, up.kv.mod_revision), (EventKind::Update, 4));
    let del = w.next().await.unwrap().unwrap();
    assert_eq!((del.kind, &*del.kv.value), (EventKind::Delete, &b"1"[..]));
}

#[tokio::test]
async fn compaction_removes_history_and_expires_old_watches() {
    let (_d, s) = open();
    s.create("/r/a", b"1".to_vec()).await.unwrap();
    for i in 1..20 {
        s.update("/r/a", vec![i], i as i64).await.unwrap();
    }
    s.create("/r/gone", b"x".to_vec()).await.unwrap();
    s.delete("/r/gone", None).await.unwrap();
    s.compact(22).await.unwrap();
    assert_eq!(s.compacted_revision(), 22);
    assert!(matches!(s.watch("/r/", 5).await, Err(StoreError::Compacted { requested: 5, compacted: 22 })));
    assert_eq!(s.list("/r/", None, 0, None).await.unwrap().items.len(), 1);
    let rows = s.read(|c| c.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get::<_, i64>(0))).await.unwrap();
    assert_eq!(rows, 1, "only the live row of /r/a survives");
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create("/r/a", b"1".to_vec()).await.unwrap();
        s.update("/r/a", b"2".to_vec(), 1).await.unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision(), 2);
    assert_eq!(&*s.get("/r/a").await.unwrap().unwrap().value, b"2");
    let kv = s.create("/r/b", b"1".to_vec()).await.unwrap();
    assert_eq!(kv.mod_revision, 3);
}

#[tokio::test]
async fn foreign_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not a database at all, just some text that is long enough").unwrap();
    let before = std::fs::read(&junk).unwrap();
    let err = SqliteStore::open(&junk).err().unwrap().to_string();
    assert!(err.contains("junk.db"), "{err}");
    assert_eq!(std::fs::read(&junk).unwrap(), before);

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    let err = SqliteStore::open(&other).err().unwrap().to_string();
    assert!(err.contains("not a Kapal database"), "{err}");
}

#[tokio::test]
async fn concurrent_writers_all_land_with_unique_revisions() {
    let (_d, s) = open();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                revs.push(s.create(&format!("/r/{w}/{i}"), vec![0; 64]).await.unwrap().mod_revision);
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800);
    assert_eq!(s.current_revision(), 800);
}
