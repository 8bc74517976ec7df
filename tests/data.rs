//! Token files and the batch loader (CPU only).

use wgtrain::data::{self, Loader};

#[test]
fn token_files_round_trip_in_both_widths() {
    let dir = std::env::temp_dir().join(format!("wgtrain-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, tokens) in [("u16.bin", vec![0u32, 7, 65535, 3]), ("u32.bin", vec![0u32, 70000, 50256, 1])] {
        let path = dir.join(name);
        data::write_tokens(&path, &tokens).unwrap();
        assert_eq!(data::read_tokens(&path).unwrap(), tokens);
        let magic = i32::from_le_bytes(std::fs::read(&path).unwrap()[..4].try_into().unwrap());
        assert_eq!(magic, if name == "u16.bin" { 20240520 } else { 20240801 });
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_token_files_say_what_is_wrong() {
    let mut header = vec![0i32; 256];
    header[0] = 1234;
    let bytes: Vec<u8> = bytemuck::cast_slice(&header).to_vec();
    assert!(data::parse_tokens(&bytes).unwrap_err().contains("bad magic number 1234"));
    header[0] = 20240520;
    header[1] = 7;
    let bytes: Vec<u8> = bytemuck::cast_slice(&header).to_vec();
    assert!(data::parse_tokens(&bytes).unwrap_err().contains("version"));
    header[1] = 1;
    header[2] = 10;
    let mut bytes: Vec<u8> = bytemuck::cast_slice(&header).to_vec();
    bytes.extend([0u8; 6]);
    assert!(data::parse_tokens(&bytes).unwrap_err().contains("10 tokens"));
    assert!(data::parse_tokens(&[0u8; 100]).unwrap_err().contains("header"));
    let err = data::read_tokens(std::path::Path::new("/no/such/tokens.bin")).unwrap_err();
    assert!(err.to_string().contains("/no/such/tokens.bin"));
}

#[test]
fn sequential_loader_follows_the_contract() {
    // 2 rows × 3 tokens: a batch reads 7 tokens from p, rows start at p and p + 3, p += 6,
    // and p returns to 0 when p + 7 would pass the end.
    let tokens: Vec<u32> = (0..20).collect();
    let mut l = Loader::new(tokens, 2, 3, false, 0).unwrap();
    assert_eq!(l.next_batch(), (vec![0, 1, 2, 3, 4, 5], vec![1, 2, 3, 4, 5, 6]));
    assert_eq!(l.next_batch(), (vec![6, 7, 8, 9, 10, 11], vec![7, 8, 9, 10, 11, 12]));
    assert_eq!(l.next_batch(), (vec![12, 13, 14, 15, 16, 17], vec![13, 14, 15, 16, 17, 18]));
    // p = 18: 18 + 7 > 20, so back to 0.
    assert_eq!(l.next_batch().0, vec![0, 1, 2, 3, 4, 5]);
    assert!(Loader::new((0..6).collect(), 2, 3, false, 0).is_err(), "6 tokens can't fill 2 × 3 + 1");
}

#[test]
fn shuffled_loader_is_seeded_and_draws_every_row_once_per_epoch() {
    // 1000 tokens, T 5: 199 rows of 6 tokens start at multiples of 5; B 4: 49 batches take 196
    // of them, and the 3 left over wait for another epoch's order.
    let tokens: Vec<u32> = (0..1000).collect();
    let epoch = |seed| {
        let mut l = Loader::new(tokens.clone(), 4, 5, true, seed).unwrap();
        assert_eq!(l.batches(), 49);
        let rows: Vec<Vec<u32>> = (0..49)
            .flat_map(|_| {
                let (x, y) = l.next_batch();
                x.chunks(5).zip(y.chunks(5)).map(|(r, s)| [r, &s[4..]].concat()).collect::<Vec<_>>()
            })
            .collect();
        rows
    };
    let (a, b, c) = (epoch(1), epoch(1), epoch(2));
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(a, c, "another seed, another order");
    for r in &a {
        assert!(r[0] % 5 == 0 && r.iter().zip(r[0]..).all(|(&t, i)| t == i), "a row is T + 1 tokens in a row: {r:?}");
    }
    let mut firsts: Vec<u32> = a.iter().map(|r| r[0]).collect();
    firsts.sort();
    firsts.dedup();
    assert_eq!(firsts.len(), 196, "each row at most once per epoch");
    let adjacent = a.chunks(4).filter(|b| b.windows(2).all(|w| w[1][0] == w[0][0] + 5)).count();
    assert!(adjacent < 3, "a batch's rows come from places apart, not one stretch ({adjacent} of 49 were)");
    // A state saved when the shuffle permuted whole batches (49 of B·T tokens) is refused by name.
    let mut l = Loader::new(tokens.clone(), 4, 5, true, 1).unwrap();
    let old = wgtrain::data::LoaderState { pos: 3, order: (0..49).collect(), rng: 7 };
    let e = l.restore(old).unwrap_err();
    assert!(e.contains("earlier wgtrain") && e.contains("whole batches"), "{e}");
    let mut st = l.state();
    st.order.pop();
    assert!(l.restore(st).unwrap_err().contains("same --data"));
}

#[test]
fn bundled_corpus_is_byte_level_and_split() {
    let (train, val) = data::bundled_corpus().unwrap();
    assert!(train.len() > 4_000_000 && val.len() > 200_000, "{} / {}", train.len(), val.len());
    assert!(train.iter().chain(&val).all(|&t| t < 128), "the plays are ASCII");
}
