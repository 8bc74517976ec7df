//! The loss curve as a PNG: train loss (blue), validation loss (red) and lr (green, on its own
//! scale), with the loss range and the last step written in a tiny pixel font. No plotting
//! dependency: a raster, and a PNG written with uncompressed deflate blocks.

use std::path::Path;

const W: usize = 800;
const H: usize = 480;
const LEFT: usize = 60;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 40;

struct Canvas {
    px: Vec<[u8; 3]>,
}

impl Canvas {
    fn new() -> Self {
        Self { px: vec![[255; 3]; W * H] }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            self.px[y as usize * W + x as usize] = c;
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=steps {
            let f = i as f64 / steps as f64;
            let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
            self.set(x.round() as i64, y.round() as i64, c);
            self.set(x.round() as i64, y.round() as i64 + 1, c);
        }
    }

    /// Draws `text` (digits, '.', '-', 'e') in a 3×5 font scaled ×2, top-left at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set((x + i * 8 + col * 2 + dx) as i64, (y + r * 2 + dy) as i64, [0; 3]);
                        }
                    }
                }
            }
        }
    }
}

fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => [0; 5],
    }
}

/// Writes the curves to `path`. `train` and `val` are (step, loss); `lr` is (step, lr).
pub fn loss_curve(path: &Path, train: &[(u64, f32)], val: &[(u64, f32)], lr: &[(u64, f64)]) -> std::io::Result<()> {
    let mut cv = Canvas::new();
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let last = train.iter().chain(val).map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let losses = train.iter().chain(val).map(|p| p.1).filter(|l| l.is_finite());
    let (lo, hi) = losses.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo as f64, hi as f64) } else { (0.0, 1.0) };
    let lr_max = lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-30);
    let x = |s: u64| LEFT as f64 + s as f64 / last * pw;
    let y = |l: f64| TOP as f64 + (1.0 - (l - lo) / (hi - lo)) * ph;
    for k in 0..=4 {
        let gy = TOP as f64 + k as f64 / 4.0 * ph;
        cv.line((LEFT as f64, gy), (LEFT as f64 + pw, gy), [225; 3]);
    }
    cv.line((LEFT as f64, TOP as f64), (LEFT as f64, TOP as f64 + ph), [0; 3]);
    cv.line((LEFT as f64, TOP as f64 + ph), (LEFT as f64 + pw, TOP as f64 + ph), [0; 3]);
    let series = |cv: &mut Canvas, pts: Vec<(f64, f64)>, c: [u8; 3]| {
        for w in pts.windows(2) {
            cv.line(w[0], w[1], c);
        }
    };
    let ylr = |v: f64| TOP as f64 + (1.0 - v / lr_max) * ph;
    series(&mut cv, lr.iter().map(|p| (x(p.0), ylr(p.1))).collect(), [40, 170, 60]);
    series(&mut cv, train.iter().filter(|p| p.1.is_finite()).map(|p| (x(p.0), y(p.1 as f64))).collect(), [40, 90, 220]);
    let vp: Vec<(f64, f64)> = val.iter().filter(|p| p.1.is_finite()).map(|p| (x(p.0), y(p.1 as f64))).collect();
    for &(px, py) in &vp {
        for dx in -3..=3 {
            for dy in -3..=3 {
                cv.set(px as i64 + dx, py as i64 + dy, [220, 40, 40]);
            }
        }
    }
    series(&mut cv, vp, [220, 40, 40]);
    cv.text(4, TOP, &format!("{hi:.2}"));
    cv.text(4, TOP + ph as usize - 10, &format!("{lo:.2}"));
    cv.text(LEFT + pw as usize - 40, H - BOTTOM + 12, &format!("{last}"));
    cv.text(LEFT, H - BOTTOM + 12, "0");
    write_png(path, &cv)
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// An RGB PNG; its zlib stream holds stored (uncompressed) deflate blocks.
fn write_png(path: &Path, cv: &Canvas) -> std::io::Result<()> {
    let mut raw = Vec::with_capacity(H * (1 + 3 * W));
    for row in cv.px.chunks(W) {
        raw.push(0); // filter: none
        raw.extend(row.iter().flatten());
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push((i + 1 == blocks.len()) as u8);
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend(*b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::new();
    ihdr.extend((W as u32).to_be_bytes());
    ihdr.extend((H as u32).to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, png)?;
    std::fs::rename(tmp, path)
}
