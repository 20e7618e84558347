//! Criterion: durable appends through the WAL with 1, 8 and 64 concurrent writers sharing
//! fsyncs (group commit). Each iteration is one append + sync per writer; the throughput is in
//! records. Uses a real segment file in a temp directory on the data disk.

use std::sync::{Arc, Barrier};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engram_wal::{Lsn, Wal, WalError, WalOptions};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_group_commit");
    group.sample_size(10);
    let payload = vec![7u8; 1700];
    for writers in [1usize, 8, 64] {
        let dir =
            tempfile::tempdir_in(std::env::var("ENGRAM_BENCH_DIR").unwrap_or_else(|_| ".".into()))
                .expect("tempdir");
        let (wal, _) = Wal::open(
            WalOptions::new(dir.path().join("wal")),
            Lsn::FIRST,
            Lsn::FIRST,
            |_| Ok::<(), WalError>(()),
        )
        .expect("open");
        let wal = Arc::new(wal);
        group.throughput(Throughput::Elements(writers as u64 * 64));
        group.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                b.iter(|| {
                    let barrier = Arc::new(Barrier::new(writers));
                    let handles: Vec<_> = (0..writers)
                        .map(|_| {
                            let (wal, barrier, payload) =
                                (Arc::clone(&wal), Arc::clone(&barrier), payload.clone());
                            std::thread::spawn(move || {
                                barrier.wait();
                                for _ in 0..64 {
                                    let (lsn, _) = wal.append(&payload).expect("append");
                                    wal.sync(lsn).expect("sync");
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.join().expect("writer");
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
