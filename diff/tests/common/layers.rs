//! Layers for the pack tests, built with the `tar` crate (files, directories, symlinks,
//! hard links), and the round trip every pack test stands on.

use std::collections::{HashMap, HashSet};

use shoal_diff::pack::{self, Applied, Base, Limits, Options, PackError, Summary};
use shoal_diff::recreate;
use shoal_protocol::Digest;
use shoal_protocol::recipe::{self, ChunkId, Recipe};

/// One entry of a layer.
#[derive(Clone, Debug)]
pub enum Item {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
}

/// A file item.
pub fn file(path: &str, content: Vec<u8>) -> Item {
    Item::File(path.to_owned(), content)
}

/// The tar of `items`, in order, with GNU headers and a fixed mtime.
pub fn layer_tar(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        match item {
            Item::File(path, content) => {
                h.set_mode(0o644);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, path, &content[..]).expect("appends");
            }
            Item::Dir(path) => {
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, path, &[][..]).expect("appends");
            }
            Item::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).expect("appends");
            }
            Item::Hardlink(path, target) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, path, target).expect("appends");
            }
        }
    }
    b.into_inner().expect("finishes")
}

/// A layer as both sides hold it.
pub struct Layer {
    pub tar: Vec<u8>,
    pub digest: Digest,
    pub recipe: Recipe,
    pub encoded: Vec<u8>,
    pub store: HashMap<ChunkId, Vec<u8>>,
}

impl Layer {
    pub fn new(items: &[Item]) -> Layer {
        Layer::of_tar(layer_tar(items))
    }

    pub fn of_tar(tar: Vec<u8>) -> Layer {
        let mut store = HashMap::new();
        let recipe = shoal_diff::build(&tar, &mut |c, bytes| {
            store.insert(c.id, bytes.to_vec());
        })
        .expect("a test tar has a recipe");
        Layer {
            digest: Digest::of(&tar),
            encoded: recipe::encode(&recipe),
            tar,
            recipe,
            store,
        }
    }

    pub fn base(&self) -> Base<'_> {
        Base {
            layer: self.digest,
            recipe: &self.recipe,
            encoded: &self.encoded,
        }
    }
}

/// The chunks of all `layers`, as a sender or receiver holds them.
pub fn store_of(layers: &[&Layer]) -> HashMap<ChunkId, Vec<u8>> {
    layers
        .iter()
        .flat_map(|l| l.store.iter().map(|(k, v)| (*k, v.clone())))
        .collect()
}

/// Makes the pack of `target` against `bases` with chunks from all of them.
pub fn make(target: &Layer, bases: &[&Layer], opts: &Options) -> (Vec<u8>, Summary) {
    let mut sender = store_of(bases);
    sender.extend(target.store.iter().map(|(k, v)| (*k, v.clone())));
    let bases: Vec<Base> = bases.iter().map(|l| l.base()).collect();
    pack::make(
        target.digest,
        &target.recipe,
        &target.encoded,
        &bases,
        Some(b"profile bytes"),
        &sender,
        opts,
    )
    .expect("makes the pack")
}

/// Applies `pack` with `bases` and their chunks, collecting what the sink receives and
/// checking that no chunk comes twice.
pub fn apply(
    pack: &[u8],
    bases: &[&Layer],
) -> Result<(Applied, HashMap<ChunkId, Vec<u8>>), PackError> {
    let receiver = store_of(bases);
    let bases: Vec<Base> = bases.iter().map(|l| l.base()).collect();
    let mut received = HashMap::new();
    let applied = pack::apply(
        pack,
        &bases,
        &receiver,
        &mut |c, bytes| {
            assert!(
                c.id.matches(bytes),
                "the sink got bytes that are not {}",
                c.id
            );
            assert_eq!(c.len as usize, bytes.len());
            let again = received.insert(c.id, bytes.to_vec());
            assert!(again.is_none(), "chunk {} came twice", c.id);
            Ok(())
        },
        &Limits::default(),
    )?;
    Ok((applied, received))
}

/// The round trip: make the pack, read its header, apply it with the bases alone, and
/// check that the sink got exactly the target's chunks the bases lack, that both sides
/// summarise the pack alike, and that those chunks with the bases' rebuild the target's
/// tar byte for byte (diff_id checked). Returns the pack and its summary.
pub fn round_trip(target: &Layer, bases: &[&Layer], opts: &Options) -> (Vec<u8>, Summary) {
    let (pack, made) = make(target, bases, opts);
    assert_eq!(made.pack_bytes, pack.len() as u64);
    let header = pack::read_header(&pack).expect("reads its header");
    assert_eq!(header.target_layer, target.digest);
    assert_eq!(header.diff_id, target.recipe.diff_id);
    assert_eq!(header.tar_size, target.tar.len() as u64);
    assert_eq!(
        header.bases,
        bases.iter().map(|b| b.digest).collect::<Vec<_>>()
    );
    let (applied, received) = apply(&pack, bases).unwrap_or_else(|e| panic!("applies: {e}"));
    assert_eq!(applied.recipe, target.recipe);
    assert_eq!(applied.profile.as_deref(), Some(&b"profile bytes"[..]));
    assert_eq!(applied.summary, made);

    let held: HashSet<ChunkId> = bases.iter().flat_map(|b| b.recipe.chunk_ids()).collect();
    let lacking: HashSet<ChunkId> = target
        .recipe
        .chunk_ids()
        .into_iter()
        .filter(|id| !held.contains(id))
        .collect();
    assert_eq!(
        received.keys().copied().collect::<HashSet<_>>(),
        lacking,
        "the sink must get exactly the chunks the bases lack"
    );
    assert_eq!(
        made.reused_chunks as usize + lacking.len(),
        target.recipe.chunk_ids().len()
    );

    let mut store = store_of(bases);
    store.extend(received);
    let mut tar = Vec::new();
    recreate(&applied.recipe, |id| store.get(id), &mut tar).expect("re-creates the target");
    assert!(tar == target.tar, "the rebuilt tar differs from the target");
    (pack, made)
}
