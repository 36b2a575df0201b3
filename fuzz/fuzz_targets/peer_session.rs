//! The peer protocol as a piece server meets it: decode every message in
//! the bytes and drive the server's session state machine with them — a
//! plain session, or (first byte odd) one seeding under a plan with
//! another session open, so that offers are rationed. A handshake on an
//! admitted session (the link going on to another file) is admitted again.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringshare_engine::meta::Geometry;
use ringshare_engine::peer::{self, ServerAction, ServerSession};
use ringshare_engine::seeding::SeedPlan;

fuzz_target!(|data: &[u8]| {
    let geometry = Geometry::new(3 * 512 * 1024 + 77);
    let seeding = data.first().is_some_and(|b| b & 1 == 1);
    let mut plan = SeedPlan::new(geometry.piece_count() as u32, 7);
    let mut now = Instant::now();
    let _other = plan.open(now);
    let mut session = ServerSession::new(4);
    let mut buf = data;
    while let Ok((msg, used)) = peer::decode(buf) {
        now += Duration::from_millis(u64::from(buf[0]));
        let answer = session.on_message_at(
            &msg,
            |p| p % 2 == 0 || seeding,
            seeding.then_some((&mut plan, now)),
        );
        match answer {
            Ok(ServerAction::Admit { .. }) if seeding => {
                session.accept_seeding(geometry, plan.open(now));
            }
            Ok(ServerAction::Admit { .. }) => session.accept(geometry),
            Ok(ServerAction::Serve { file_offset, len, .. }) => {
                assert!(file_offset + u64::from(len) <= geometry.len());
                session.served_at(seeding.then_some((&mut plan, now)));
            }
            Ok(_) => {}
            Err(refuse) if refuse.fatal => break,
            Err(_) => {}
        }
        for piece in session.take_offers() {
            assert!(u64::from(piece) < geometry.piece_count());
        }
        buf = &buf[used..];
    }
    session.close_at(&mut plan);
});
