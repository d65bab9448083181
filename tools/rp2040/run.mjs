// Runs a Raspberry Pi Pico firmware in rp2040js, its USB CDC serial (the MicroPython
// REPL) on our stdin/stdout, so a host program can drive the raw REPL over two pipes.
//   node run.mjs firmware.bin bootrom_b1.bin
// Emulator messages go to stderr; stdout carries only what the Pico sends. The
// emulator stops when stdin closes.
import { readFileSync } from 'node:fs';
import { Simulator, USBCDC } from 'rp2040js';

const [firmwarePath, bootromPath] = process.argv.slice(2);
if (!firmwarePath || !bootromPath) {
  process.stderr.write('usage: node run.mjs firmware.bin bootrom_b1.bin\n');
  process.exit(2);
}

const sim = new Simulator();
const mcu = sim.rp2040;
// Only errors: a booting Pico touches dozens of registers rp2040js does not model.
mcu.logger = {
  debug() {}, info() {}, warn() {},
  error: (part, msg) => process.stderr.write(`rp2040js: ${part}: ${msg}\n`),
};

// loadBootrom resets the chip, which erases the flash: the firmware goes in after it.
const rom = readFileSync(bootromPath);
mcu.loadBootrom(new Uint32Array(rom.buffer, rom.byteOffset, rom.byteLength / 4));
mcu.flash.set(readFileSync(firmwarePath), 0); // XIP flash starts at 0x10000000
mcu.core.PC = 0x10000000; // boot2, the firmware's first 256 bytes, sets up XIP and jumps on

const cdc = new USBCDC(mcu.usbCtrl);
cdc.onSerialData = (buf) => process.stdout.write(buf);

// Host-to-Pico bytes wait here. rp2040js answers an armed OUT endpoint at once, with
// zero bytes when it has none, and TinyUSB re-arms: the Pico would take a USB interrupt
// every few emulated microseconds, charged to whatever code it is timing. A real USB
// controller NAKs the host in hardware, so the read is held until there is data.
const inbox = [];
let heldRead = null;
const answerRead = cdc.usb.onEndpointRead;
cdc.usb.onEndpointRead = (endpoint, size) => {
  if (endpoint !== cdc.outEndpoint) return answerRead(endpoint, size);
  if (!inbox.length) {
    heldRead = size;
    return;
  }
  for (const b of inbox.splice(0, Math.min(size, cdc.txFIFO.size - cdc.txFIFO.itemCount))) {
    cdc.sendSerialByte(b);
  }
  answerRead(endpoint, size);
};

process.stdin.on('data', (chunk) => {
  for (const b of chunk) inbox.push(b);
  if (heldRead !== null) {
    const size = heldRead;
    heldRead = null;
    cdc.usb.onEndpointRead(cdc.outEndpoint, size);
  }
});
process.stdin.on('end', () => {
  sim.stop();
  process.exit(0);
});

sim.execute();
