"""Protocol constants, grouped as the whitepaper (section 6.1) and wireguard-go group them."""

# Messages and keys
REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1

# Timers, in seconds
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER_MAX = 0.334  # up to 333 ms of jitter on handshake retransmits
KEEPALIVE_TIMEOUT = 10.0
COOKIE_REFRESH_TIME = 120.0
HANDSHAKE_INITIATION_RATE = 0.020  # at most one initiation consumed per peer per 20 ms
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18 attempts
ZERO_KEY_MATERIAL_AFTER = 3 * REJECT_AFTER_TIME  # 540 s
# Rekey on receive when the current keypair is this old (whitepaper 6.2).
REKEY_ON_RECEIVE_AFTER = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT

# Replay window: 8128 counters, as in wireguard-go and the kernel.
REPLAY_WINDOW_SIZE = 8192 - 64

# Load handling (wireguard-go device/constants.go, ratelimiter)
QUEUE_HANDSHAKE_SIZE = 1024
UNDER_LOAD_QUEUE_SIZE = QUEUE_HANDSHAKE_SIZE // 8
UNDER_LOAD_AFTER_TIME = 1.0
RATELIMIT_PACKETS_PER_SECOND = 20
RATELIMIT_BURST = 5

# Staging: packets waiting for a session, per peer
MAX_STAGED_PACKETS = 128

# Sizes
KEY_LEN = 32
MAC_LEN = 16
AEAD_TAG_LEN = 16
TIMESTAMP_LEN = 12
MESSAGE_INITIATION_SIZE = 148
MESSAGE_RESPONSE_SIZE = 92
MESSAGE_COOKIE_REPLY_SIZE = 64
MESSAGE_TRANSPORT_HEADER_SIZE = 16
MESSAGE_TRANSPORT_OVERHEAD = MESSAGE_TRANSPORT_HEADER_SIZE + AEAD_TAG_LEN  # 32
MESSAGE_KEEPALIVE_SIZE = MESSAGE_TRANSPORT_OVERHEAD
PADDING_MULTIPLE = 16
DEFAULT_MTU = 1420

# Message types (little-endian u32: type byte followed by three zero reserved bytes)
MESSAGE_INITIATION_TYPE = 1
MESSAGE_RESPONSE_TYPE = 2
MESSAGE_COOKIE_REPLY_TYPE = 3
MESSAGE_TRANSPORT_TYPE = 4

# Noise names and labels
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
