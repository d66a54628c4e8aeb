//! The virtio-blk device: image setup, features, config space and queue processing.

use std::io::{Seek, SeekFrom};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::request::{Disk, Segment, ID_BYTES, SECTOR_SIZE, SEG_MAX, SIZE_MAX};
use super::{BlockError, QUEUE_SIZE};
use crate::devices::persist::Persist;
use crate::devices::rate_limiter::{self, RateLimiter, RateLimiterConfig};
use crate::devices::virtio::{
    read_config_bytes, DeviceStateError, VirtioDevice, VirtioDeviceState,
};
use crate::host_file::{self, Accept};
use crate::metrics::{inc, BlockMetrics};

const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];

/// Config space up to and including `blk_size` (virtio 1.1 §5.2.4): capacity @0,
/// size_max @8, seg_max @12, geometry @16 (unused), blk_size @20. Later fields read as 0.
const CONFIG_LEN: usize = 24;

/// The device-specific snapshot state. The acked features (whether writes go through
/// `fdatasync`) are restored by the transport re-acking the driver's features; these
/// fields only check that the drive the guest sees is the one it saw before.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockState {
    /// Capacity in sectors, as the guest read it from config space.
    pub capacity: u64,
    /// Whether `VIRTIO_BLK_F_RO` was offered.
    pub read_only: bool,
}

/// A saved [`BlockState`] describes another drive than this one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "virtio-blk {}: the snapshot's drive had {} sectors ({}), this one has {} ({})",
    path.display(),
    saved.capacity,
    mode(saved.read_only),
    this.capacity,
    mode(this.read_only)
)]
pub struct BlockStateError {
    pub path: PathBuf,
    pub saved: BlockState,
    pub this: BlockState,
}

fn mode(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

/// virtio-blk device backed by a raw image file.
pub struct Block {
    disk: Disk,
    path: PathBuf,
    features: u64,
    config: [u8; CONFIG_LEN],
    /// Per-request scratch list of data descriptors, at most `SEG_MAX` long.
    segs: Vec<Segment>,
    drive_id: String,
    /// Unlimited unless configured; its timerfd is the device's backend fd.
    limiter: RateLimiter,
}

/// Opens a raw image without blocking and returns it with its capacity in sectors (its
/// size must be a whole number of them).
fn open_image(path: &Path, read_only: bool) -> Result<(std::fs::File, u64), BlockError> {
    let size_err = |source| BlockError::Size {
        path: path.to_path_buf(),
        source,
    };
    // Never blocks (a FIFO is refused, not waited on): see crate::host_file.
    let mut file =
        host_file::open(path, !read_only, Accept::FileOrBlockDevice).map_err(|source| {
            match host_file::not_regular(&source) {
                Some(r) => BlockError::NotAFile {
                    path: path.to_path_buf(),
                    kind: r.kind,
                },
                None => BlockError::Open {
                    path: path.to_path_buf(),
                    read_only,
                    source,
                },
            }
        })?;
    // Seeking to the end also sizes block devices, whose metadata length is 0.
    let size = file.seek(SeekFrom::End(0)).map_err(size_err)?;
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(BlockError::UnalignedSize {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok((file, size / SECTOR_SIZE))
}

impl Block {
    /// Opens the raw image at `path` (read-write unless `read_only`). Its size must be a
    /// whole number of 512-byte sectors. `id` is what `VIRTIO_BLK_T_GET_ID` returns
    /// (the guest's `/sys/block/vdX/serial`): truncated to 20 bytes, NUL-padded.
    pub fn new(path: &Path, read_only: bool, id: &str) -> Result<Block, BlockError> {
        let (file, capacity) = open_image(path, read_only)?;
        let limiter = RateLimiter::new(&RateLimiterConfig::default(), rate_limiter::now())
            .map_err(BlockError::Limiter)?;

        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);

        let mut features = (1u64 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE);
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }

        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());

        Ok(Block {
            disk: Disk {
                file,
                capacity,
                read_only,
                // Until the driver accepts FLUSH, writes are synchronous.
                write_through: true,
                id: id_bytes,
                metrics: Arc::default(),
            },
            path: path.to_path_buf(),
            features,
            config,
            segs: Vec::with_capacity(SEG_MAX as usize),
            drive_id: id.to_string(),
            limiter,
        })
    }

    /// A new backing file for a running drive (`PATCH /drives/{id}` with
    /// `path_on_host`): opened and sized as [`Block::new`] does, in the same mode; the
    /// new capacity is in config space at once. The caller raises the config-change
    /// interrupt. On error nothing changes.
    pub fn swap_backing(&mut self, path: &Path) -> Result<(), BlockError> {
        let (file, capacity) = open_image(path, self.disk.read_only)?;
        self.disk.file = file;
        self.disk.capacity = capacity;
        self.config[0..8].copy_from_slice(&capacity.to_le_bytes());
        self.path = path.to_path_buf();
        Ok(())
    }

    /// The drive_id the device was made for.
    pub fn drive_id(&self) -> &str {
        &self.drive_id
    }

    /// Sets the rate limiter (at attach, or a PATCH on a running VM: new full buckets; a
    /// throttled queue is woken).
    pub fn set_rate_limiter(&mut self, cfg: &RateLimiterConfig) {
        self.limiter.update(cfg, rate_limiter::now());
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity
    }

    /// Whether the guest sees a read-only device.
    pub fn is_read_only(&self) -> bool {
        self.disk.read_only
    }

    /// The backing image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This drive's counters (a new device has its own, unshared ones).
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.disk.metrics
    }

    /// Swaps the backing file (tests: a file whose I/O fails).
    #[cfg(test)]
    pub(super) fn set_file(&mut self, file: std::fs::File) {
        self.disk.file = file;
    }

    /// Counts this drive's requests in `m` (the drive's entry in the metrics line).
    pub fn set_metrics(&mut self, m: Arc<BlockMetrics>) {
        self.disk.metrics = m;
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.disk.write_through = features & (1 << VIRTIO_BLK_F_FLUSH) == 0;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn save_state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Block(self.save())
    }

    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), DeviceStateError> {
        match state {
            VirtioDeviceState::Block(s) => Ok(self.restore(s)?),
            other => Err(DeviceStateError::kind(other, super::KIND)),
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.limiter.timer_fd())
    }

    /// The rate limiter's timer fired: the queue may move again.
    fn process_backend(&mut self, queues: Option<&mut [Queue]>, mem: &GuestMemoryMmap) -> bool {
        self.limiter.on_timer();
        match queues {
            Some(q) => self.process_queue(0, q, mem),
            None => false,
        }
    }

    fn block(&mut self) -> Option<&mut Block> {
        Some(self)
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        let mut used = false;
        while !self.limiter.is_blocked() {
            let before = queue.next_avail();
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            if !self.limiter.is_unlimited() {
                // One op and the request's data bytes (every descriptor but the 16-byte
                // header and the status byte; a malformed chain is charged what it
                // claims, which only slows its own guest).
                let bytes: u64 = chain.clone().map(|d| u64::from(d.len())).sum();
                if !self
                    .limiter
                    .consume(bytes.saturating_sub(17), rate_limiter::now())
                {
                    queue.set_next_avail(before);
                    inc(&self.disk.metrics.throttled);
                    break;
                }
            }
            let head = chain.head_index();
            let len = self.disk.handle_chain(mem, chain, &mut self.segs);
            // A failure here (e.g. a head index past the queue size) only loses this
            // entry; the next one is still processed.
            match queue.add_used(mem, head, len) {
                Ok(()) => used = true,
                Err(e) => tracing::warn!(
                    "virtio-blk {}: cannot add used entry for head {head}: {e}",
                    self.path.display()
                ),
            }
        }
        used
    }
}

impl Persist for Block {
    type State = BlockState;
    type Error = BlockStateError;

    fn save(&self) -> BlockState {
        BlockState {
            capacity: self.disk.capacity,
            read_only: self.disk.read_only,
        }
    }

    /// Refuses a drive of another size or writability than the snapshot's: the guest has
    /// the old capacity cached and its filesystem would be corrupted.
    fn restore(&mut self, saved: &BlockState) -> Result<(), BlockStateError> {
        let this = self.save();
        if *saved != this {
            return Err(BlockStateError {
                path: self.path.clone(),
                saved: *saved,
                this,
            });
        }
        Ok(())
    }
}
