//! The peer protocol as a piece server meets it: decode every message in
//! the bytes and drive the server's session state machine with them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringshare_engine::meta::Geometry;
use ringshare_engine::peer::{self, ServerAction, ServerSession};

fuzz_target!(|data: &[u8]| {
    let geometry = Geometry::new(3 * 512 * 1024 + 77);
    let mut session = ServerSession::new(4);
    let mut buf = data;
    while let Ok((msg, used)) = peer::decode(buf) {
        match session.on_message(&msg, |p| p % 2 == 0) {
            Ok(ServerAction::Admit { .. }) => session.accept(geometry),
            Ok(ServerAction::Serve { file_offset, len, .. }) => {
                assert!(file_offset + u64::from(len) <= geometry.len());
                session.served();
            }
            Ok(_) => {}
            Err(refuse) if refuse.fatal => break,
            Err(_) => {}
        }
        buf = &buf[used..];
    }
});
