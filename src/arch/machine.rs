//! The machine as the boot device tree describes it: the blob at `x0`, checked and read (`hvcore::platform`), in a type only this module makes, so drivers can trust the addresses in it.

use hvcore::platform::{self, DtbError};

/// The device tree the boot protocol put at `addr` (`x0` at entry), as
/// bytes: checked to be non-null, 8-byte aligned and of a plausible size
/// before any of it is read.
///
/// # Errors
///
/// [`DtbError::Missing`], [`DtbError::Misaligned`] or [`DtbError::BadSize`].
pub fn device_tree(addr: usize) -> Result<&'static [u8], DtbError> {
    if addr == 0 {
        return Err(DtbError::Missing);
    }
    if !addr.is_multiple_of(8) {
        return Err(DtbError::Misaligned(addr));
    }
    // SAFETY: `addr` is the DTB address from the boot protocol (x0 at
    // entry), non-null and aligned; the MMU is off so it is a physical
    // address in RAM, and a header is at least 8 bytes.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    let size = platform::blob_size(header)?;
    // SAFETY: as above, for the `size` bytes the header gives (checked to
    // be at most MAX_DTB_SIZE). The blob is never written and its range is
    // kept out of the heap and the frame allocator (mm::init), so it stays
    // valid for 'static.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, size) })
}

/// The machine as the boot device tree describes it. Only [`read_machine`]
/// makes one, so the addresses in it (the UART, the GIC, memory) are the
/// boot protocol's trusted description, which the drivers rely on.
#[derive(Debug)]
pub struct Machine {
    platform: platform::Platform<'static>,
}

impl Machine {
    /// What the device tree says.
    pub fn platform(&self) -> &platform::Platform<'static> {
        &self.platform
    }
}

/// Reads the device tree at `dtb` (`x0` at entry).
///
/// # Errors
///
/// A [`DtbError`] naming what is missing or malformed.
pub fn read_machine(dtb: usize) -> Result<Machine, DtbError> {
    let blob = device_tree(dtb)?;
    Ok(Machine {
        platform: platform::parse(blob, dtb as u64)?,
    })
}
