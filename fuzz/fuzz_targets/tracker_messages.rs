//! Every message a tracker decodes from the network: client requests,
//! responses (decoded by clients) and tracker-to-tracker sync messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringshare_engine::proto::{Request, Response};
use ringshare_tracker::sync::SyncMsg;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = postcard::from_bytes::<Request>(data) {
        // What decodes re-encodes to something that decodes the same.
        let again = postcard::to_stdvec(&req).unwrap();
        assert_eq!(postcard::from_bytes::<Request>(&again).unwrap(), req);
    }
    let _ = postcard::from_bytes::<Response>(data);
    let _ = postcard::from_bytes::<SyncMsg>(data);
});
