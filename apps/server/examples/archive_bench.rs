//! Archive throughput (issue 14): messages per second through the
//! archive writer — the queue publishes push into and its batching task —
//! into the database at `DATABASE_URL` (`sqlite://…` or `postgres://…`).
//! `scripts/archive_bench.sh` (`make bench-archive`) starts a PostgreSQL of
//! its own and runs this against it and against a SQLite file.
//!
//! Usage: archive_bench <database-url> [messages] [rooms]
//! Prints one line: database, messages, rooms, seconds, messages/s.

use protocol::{ChatMessage, RoomName, User};
use server::archive::writer::ArchiveWriter;
use server::archive::{Archive, Archived};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: archive_bench <database-url> [messages] [rooms]"))?;
    let messages: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let rooms: u64 = args.next().map_or(Ok(400), |a| a.parse())?;
    let archive = Archive::connect(&url).await?;
    let kind = archive.kind();
    let writer = ArchiveWriter::start(archive, 65_536);
    let marks: Vec<(RoomName, Arc<AtomicU64>)> = (0..rooms)
        .map(|r| {
            let room = RoomName::parse(&format!("bench-{r}")).expect("a room name");
            (room, Arc::new(AtomicU64::new(0)))
        })
        .collect();
    let epoch: Arc<str> = Arc::from(format!("{:016x}", rand::random::<u64>()));
    let user = User {
        id: "u_bench".to_owned(),
        name: "bench".to_owned(),
    };
    let body = "x".repeat(100);
    let start = Instant::now();
    for i in 0..messages {
        let (room, mark) = &marks[(i % rooms) as usize];
        let offset = i / rooms + 1;
        writer
            .push(
                Archived {
                    room: room.clone(),
                    epoch: epoch.clone(),
                    message: ChatMessage {
                        room: room.as_str().to_owned(),
                        offset,
                        id: format!("m_{i}"),
                        client_id: format!("c_{i}"),
                        from: user.clone(),
                        body: body.clone(),
                        ts: 1_700_000_000_000 + i as i64,
                    },
                },
                mark.clone(),
            )
            .await;
    }
    writer.flush().await;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "archive {kind}: {messages} messages over {rooms} rooms in {seconds:.2} s = {:.0} messages/s",
        messages as f64 / seconds
    );
    Ok(())
}
