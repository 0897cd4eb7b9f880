//! What a power loss can leave: every durable state the disk may hold, from the pending
//! directory and data ops that may or may not have reached it, and restoring one.

use super::*;

impl Fs {
    /// Every distinct durable state a power loss could leave now, in a fixed order; the first is
    /// the disk as it is (nothing pending made it).
    pub fn crash_images(&self) -> Vec<Image> {
        // Directory: some prefix of the pending directory ops reached the disk.
        let mut dirs: Vec<BTreeMap<&'static str, Ino>> = Vec::with_capacity(self.dir_pending.len() + 1);
        let mut names = self.disk_names.clone();
        dirs.push(names.clone());
        for op in &self.dir_pending {
            op.apply(&mut names);
            dirs.push(names.clone());
        }
        let mut images: Vec<Image> = Vec::new();
        let mut seen: BTreeSet<Image> = BTreeSet::new();
        let mut combinations = 0usize;
        for dir in &dirs {
            let files: Vec<(&'static str, Vec<Vec<u8>>)> =
                dir.iter().map(|(&n, &ino)| (n, self.durable_contents(ino))).collect();
            let mut choice = vec![0usize; files.len()];
            loop {
                combinations += 1;
                assert!(
                    combinations <= MAX_COMBINATIONS,
                    "a power loss here has more than {MAX_COMBINATIONS} combinations: the model is too large"
                );
                let image: Image = files.iter().zip(&choice).map(|((n, opts), &k)| (*n, opts[k].clone())).collect();
                if seen.insert(image.clone()) {
                    images.push(image);
                }
                // Next combination, mixed radix.
                let mut i = 0;
                while i < files.len() {
                    choice[i] += 1;
                    if choice[i] < files[i].1.len() {
                        break;
                    }
                    choice[i] = 0;
                    i += 1;
                }
                if i == files.len() {
                    break;
                }
            }
        }
        assert!(
            images.len() <= MAX_CRASH_STATES,
            "a power loss here may leave {} durable states, more than {MAX_CRASH_STATES}: the model is too large",
            images.len()
        );
        images
    }

    /// Every content the disk may hold for one file after a power loss: a prefix of its pending
    /// ops, the next one possibly torn.
    fn durable_contents(&self, ino: Ino) -> Vec<Vec<u8>> {
        let inode = self.inode(ino);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut base = inode.disk.clone();
        let push = |v: Vec<u8>, out: &mut Vec<Vec<u8>>| {
            if !out.contains(&v) {
                out.push(v);
            }
        };
        push(base.clone(), &mut out);
        for op in &inode.pending {
            let blocks = op.blocks();
            if blocks.len() > 1 {
                let DataOp::Write { offset, bytes } = op else { unreachable!("only writes cover blocks") };
                // Proper, non-empty subsets of the blocks.
                for mask in 1..(1u32 << blocks.len()) - 1 {
                    let mut torn = base.clone();
                    for (b, &(start, end)) in blocks.iter().enumerate() {
                        if mask & (1 << b) != 0 {
                            let from = start - *offset as usize;
                            write_at(&mut torn, start, &bytes[from..from + (end - start)]);
                        }
                    }
                    push(torn, &mut out);
                }
            }
            op.apply(&mut base);
            push(base.clone(), &mut out);
        }
        out
    }

    /// Describe durable state `k` of [`Fs::crash_images`] for a timeline.
    pub fn describe_image(image: &Image) -> String {
        if image.is_empty() {
            return "no files".to_string();
        }
        image.iter().map(|(n, b)| format!("{n}={}", show(b))).collect::<Vec<_>>().join(", ")
    }

    /// Power fails and the disk holds `image` when it comes back.
    pub(super) fn restore(&mut self, image: &Image) {
        let actors = self.waits.len();
        let real = self.real.take();
        let mismatch = self.mismatch.take();
        *self = Fs::new(actors);
        self.real = real;
        self.mismatch = mismatch;
        for (name, bytes) in image {
            let ino = self.new_inode(Inode { cache: bytes.clone(), disk: bytes.clone(), pending: Vec::new() });
            self.names.insert(name, ino);
            self.disk_names.insert(name, ino);
        }
    }
}
