//! What the state crate's integration tests share.

use kubetrail_state::{DamagedRecord, QueueId, QueueItem, Reader};

/// Every record of queue `q`, read as an output reads them (`batch` at a time, each read going
/// on after the last record it delivered or reported damaged), and the damaged records the
/// reads reported.
pub fn read_with_damage(
    reader: &mut Reader,
    q: QueueId,
    batch: usize,
) -> (Vec<QueueItem>, Vec<DamagedRecord>) {
    let (mut got, mut damaged, mut after) = (Vec::new(), Vec::new(), 0);
    loop {
        let items = reader.read_queue(q, after, batch, usize::MAX).unwrap();
        let lost = reader.take_damaged(q);
        let last = items.last().map(|i| i.seq).max(lost.last().map(|d| d.seq));
        got.extend(items);
        damaged.extend(lost);
        match last {
            Some(l) => after = l,
            None => return (got, damaged),
        }
    }
}
