/*
 * btshim.c - a Bluetooth stack made of Unix sockets, for chan_mobile on a
 * machine without Bluetooth.  Loaded into the bench's Asterisk with
 * LD_PRELOAD; built by testbed/shim.py (build_shim).
 *
 * README
 * ======
 * chan_mobile talks to the kernel's Bluetooth sockets and to libbluetooth.
 * This library interposes exactly the calls it makes (checked against
 * `nm -D chan_mobile.so` of Asterisk 22.10.1) and maps them onto Unix
 * sockets in one directory, where the phone simulator (testbed/phone.py)
 * listens.  Everything above the socket layer - libbluetooth's SDP client,
 * chan_mobile's AT parser, its threads and timeouts - stays real.
 *
 * Hooked: hci_get_route, hci_devid, hci_devba, hci_open_dev, hci_close_dev,
 * hci_read_voice_setting, hci_read_remote_name, hci_inquiry, sdp_connect;
 * socket, bind, listen, accept, accept4, connect, close, read, recv, write,
 * send, getsockopt, setsockopt, ioctl (only for the shim's own descriptors;
 * everything else passes straight to libc via dlsym(RTLD_NEXT)).
 *
 * Environment (read once, when the library is loaded)
 *   BTSHIM_DIR             socket directory as the process sees it (inside the
 *                          chroot).  Unset: no Bluetooth at all, as on a
 *                          kernel without it (hci_get_route fails, sockets
 *                          fail with EAFNOSUPPORT).
 *   BTSHIM_ADAPTERS        "hci0=00:1A:7D:DA:71:10,hci1=00:1A:7D:DA:71:11".
 *                          A name hciN gets device id N.
 *   BTSHIM_VOICE_SETTING   optional per-adapter voice setting override,
 *                          "hci1=0x0040" (default 0x0060, the only value
 *                          chan_mobile accepts).
 *   BTSHIM_SCO_MTU         SCO_OPTIONS mtu (default 48; a Raspberry Pi's
 *                          onboard controller would say 60).
 *   BTSHIM_PAGE_TIMEOUT_MS how long a connect to an absent phone takes before
 *                          it fails (default 0; real radios take ~5120 ms).
 *   BTSHIM_INQUIRY_MS      how long hci_inquiry takes (default 0; a real
 *                          inquiry of length 8 takes ~10 s).
 *   BTSHIM_LOG             optional file to append a line per shimmed call.
 *
 * Socket names in BTSHIM_DIR (MAC12 = address without colons, upper case;
 * the same scheme as testbed/spec.py)
 *   rf-<PHONE>-<ch>   stream socket: a phone's RFCOMM server channel <ch>.
 *                     connect(AF_BLUETOOTH RFCOMM, phone, ch) connects here.
 *   sdp-<PHONE>       seqpacket socket: the phone's SDP server (L2CAP PSM 1:
 *                     sdp_connect and any L2CAP connect to PSM 1 land here).
 *                     Its existence also means "the phone is in range":
 *                     hci_inquiry lists these phones.
 *   lost-<PHONE>      optional text file, "0x08": the HCI reason the phone's
 *                     last link was lost with (see "Errors" below).
 *   dev-<PHONE>       optional text file, "name=Pixel 7" and
 *                     "class=0x5a020c" lines, for hci_inquiry and
 *                     hci_read_remote_name.
 *   sco-<ADDR>        seqpacket socket: the SCO listener of <ADDR>.  bind()
 *                     of an SCO socket to an adapter's address creates it;
 *                     a phone connects to it to carry call audio.  An SCO
 *                     connect() (chan_mobile only does that for headsets)
 *                     goes to the peer's sco-<ADDR>.
 *
 * Who is calling (peer addresses)
 *   The shim binds every client socket it creates to the abstract Unix name
 *   "\0btshim-adapter-<ADAPTER>-<pid>-<n>", so the phone learns which
 *   adapter connected (and so which sco-<ADAPTER> to call back).
 *   A phone binds its SCO client socket to "\0btshim-phone-<PHONE>-<any>"
 *   (a filesystem path whose last component starts "btshim-phone-<PHONE>"
 *   works too); accept() on the SCO listener reads the phone's address from
 *   that name and returns it in struct sockaddr_sco, as the kernel would.
 *   No header travels in the data stream: RFCOMM carries only AT text and
 *   SCO only 48-byte audio frames.
 *
 * Errors as the kernel reports them
 *   - connect to a phone whose socket is absent: EHOSTDOWN (page timeout),
 *     after BTSHIM_PAGE_TIMEOUT_MS; to a phone that is in range (its sdp-
 *     socket exists) but not listening on that channel: ECONNREFUSED.
 *     chan_mobile treats both alike (debug line, retry next interval).
 *   - a peer that closed reads as ECONNRESET, never as end of file: on EOF
 *     chan_mobile's AT reader returns AT_UNKNOWN and its monitor thread spins
 *     on a readable socket instead of dropping the link.
 *   - write() and send() never raise SIGPIPE; a closed peer gives ECONNRESET.
 *   - a link the controller declared lost reads (and writes) as the errno the
 *     kernel's bt_to_errno() gives for the HCI disconnection reason, not as
 *     ECONNRESET.  The phone simulator writes the reason, "0x08" for
 *     Connection Timeout (the supervision timeout expired), to lost-<PHONE>
 *     before it closes its end; 0x08 reads as ETIMEDOUT, what chan_mobile
 *     got from the real kernel on the real-stack VM.  The file stays until
 *     the phone's next link comes up (the simulator removes it then).
 *   - sdp_connect to BDADDR_LOCAL fails with ENOENT, as without bluetoothd
 *     --compat (chan_mobile then logs a warning and carries on).  To a phone,
 *     it returns a real libbluetooth session whose socket is connected to
 *     sdp-<PHONE>, so libbluetooth speaks real SDP PDUs to the simulator.
 *   - getsockopt(SOL_SCO, SCO_OPTIONS) says mtu BTSHIM_SCO_MTU.
 *
 * Not covered: RFCOMM/L2CAP listeners (chan_mobile never listens on them),
 * HCI sockets opened without hci_open_dev, adapters coming and going while
 * the process runs (restart it with another BTSHIM_ADAPTERS).
 *
 * Build: gcc -shared -fPIC -O2 -Wall -Werror btshim.c -o btshim.so -ldl
 * Check against BlueZ's headers (libbluetooth-dev): add -DBTSHIM_CHECK_HEADERS;
 * every hooked function is then compiled against its real prototype and every
 * structure this file lays out by hand is compared with the header's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <endian.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef BTSHIM_CHECK_HEADERS
#include <bluetooth/bluetooth.h>
#include <bluetooth/hci.h>
#include <bluetooth/hci_lib.h>
#include <bluetooth/l2cap.h>
#include <bluetooth/rfcomm.h>
#include <bluetooth/sco.h>
#include <bluetooth/sdp.h>
#include <bluetooth/sdp_lib.h>
#else
/* The public types of BlueZ's headers, laid out as they are there. */
typedef struct {
	uint8_t b[6];
} __attribute__((packed)) bdaddr_t;

typedef struct {
	bdaddr_t bdaddr;
	uint8_t pscan_rep_mode;
	uint8_t pscan_period_mode;
	uint8_t pscan_mode;
	uint8_t dev_class[3];
	uint16_t clock_offset;
} __attribute__((packed)) inquiry_info;

typedef struct {
	int sock;
	int state;
	int local;
	int flags;
	uint16_t tid;
	void *priv;
} sdp_session_t;
#endif

/* Constants and socket addresses of the kernel's Bluetooth ABI. */
#define BS_AF_BLUETOOTH 31
#define BS_BTPROTO_L2CAP 0
#define BS_BTPROTO_SCO 2
#define BS_BTPROTO_RFCOMM 3
#define BS_SOL_L2CAP 6
#define BS_SOL_SCO 17
#define BS_SOL_RFCOMM 18
#define BS_SOL_BLUETOOTH 274
#define BS_SCO_OPTIONS 0x01
#define BS_SCO_CONNINFO 0x02
#define BS_SDP_PSM 0x0001
#define BS_SDP_WAIT_ON_CLOSE 0x02
#define BS_SDP_NON_BLOCKING 0x04
#define BS_HCI_MAX_NAME_LENGTH 248
#define BS_HCIDEVUP _IOW('H', 201, int)
#define BS_HCISETLINKMODE _IOW('H', 226, int)
#define BS_HCISETLINKPOL _IOW('H', 225, int)

struct bs_sockaddr_rc {
	sa_family_t rc_family;
	bdaddr_t rc_bdaddr;
	uint8_t rc_channel;
};

struct bs_sockaddr_sco {
	sa_family_t sco_family;
	bdaddr_t sco_bdaddr;
};

struct bs_sockaddr_l2 {
	sa_family_t l2_family;
	unsigned short l2_psm;
	bdaddr_t l2_bdaddr;
	unsigned short l2_cid;
	uint8_t l2_bdaddr_type;
};

struct bs_sco_options {
	uint16_t mtu;
};

struct bs_sco_conninfo {
	uint16_t hci_handle;
	uint8_t dev_class[3];
};

#ifdef BTSHIM_CHECK_HEADERS
#define BS_SAME_OFFSET(a, fa, b, fb) \
	_Static_assert(offsetof(struct a, fa) == offsetof(struct b, fb), #a "." #fa)
_Static_assert(BS_AF_BLUETOOTH == AF_BLUETOOTH, "AF_BLUETOOTH");
_Static_assert(BS_BTPROTO_L2CAP == BTPROTO_L2CAP, "BTPROTO_L2CAP");
_Static_assert(BS_BTPROTO_SCO == BTPROTO_SCO, "BTPROTO_SCO");
_Static_assert(BS_BTPROTO_RFCOMM == BTPROTO_RFCOMM, "BTPROTO_RFCOMM");
_Static_assert(BS_SOL_L2CAP == SOL_L2CAP, "SOL_L2CAP");
_Static_assert(BS_SOL_SCO == SOL_SCO, "SOL_SCO");
_Static_assert(BS_SOL_RFCOMM == SOL_RFCOMM, "SOL_RFCOMM");
_Static_assert(BS_SOL_BLUETOOTH == SOL_BLUETOOTH, "SOL_BLUETOOTH");
_Static_assert(BS_SCO_OPTIONS == SCO_OPTIONS, "SCO_OPTIONS");
_Static_assert(BS_SCO_CONNINFO == SCO_CONNINFO, "SCO_CONNINFO");
_Static_assert(BS_SDP_PSM == SDP_PSM, "SDP_PSM");
_Static_assert(BS_SDP_WAIT_ON_CLOSE == SDP_WAIT_ON_CLOSE, "SDP_WAIT_ON_CLOSE");
_Static_assert(BS_SDP_NON_BLOCKING == SDP_NON_BLOCKING, "SDP_NON_BLOCKING");
_Static_assert(BS_HCI_MAX_NAME_LENGTH == HCI_MAX_NAME_LENGTH, "HCI_MAX_NAME_LENGTH");
_Static_assert(BS_HCIDEVUP == HCIDEVUP, "HCIDEVUP");
_Static_assert(BS_HCISETLINKMODE == HCISETLINKMODE, "HCISETLINKMODE");
_Static_assert(BS_HCISETLINKPOL == HCISETLINKPOL, "HCISETLINKPOL");
_Static_assert(sizeof(bdaddr_t) == 6, "bdaddr_t");
_Static_assert(sizeof(inquiry_info) == INQUIRY_INFO_SIZE, "inquiry_info");
_Static_assert(sizeof(struct bs_sockaddr_rc) == sizeof(struct sockaddr_rc), "sockaddr_rc");
BS_SAME_OFFSET(bs_sockaddr_rc, rc_bdaddr, sockaddr_rc, rc_bdaddr);
BS_SAME_OFFSET(bs_sockaddr_rc, rc_channel, sockaddr_rc, rc_channel);
_Static_assert(sizeof(struct bs_sockaddr_sco) == sizeof(struct sockaddr_sco), "sockaddr_sco");
BS_SAME_OFFSET(bs_sockaddr_sco, sco_bdaddr, sockaddr_sco, sco_bdaddr);
_Static_assert(sizeof(struct bs_sockaddr_l2) == sizeof(struct sockaddr_l2), "sockaddr_l2");
BS_SAME_OFFSET(bs_sockaddr_l2, l2_psm, sockaddr_l2, l2_psm);
BS_SAME_OFFSET(bs_sockaddr_l2, l2_bdaddr, sockaddr_l2, l2_bdaddr);
_Static_assert(sizeof(struct bs_sco_options) == sizeof(struct sco_options), "sco_options");
_Static_assert(sizeof(struct bs_sco_conninfo) == sizeof(struct sco_conninfo), "sco_conninfo");
BS_SAME_OFFSET(bs_sco_conninfo, dev_class, sco_conninfo, dev_class);
#endif

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */

#define BS_MAX_ADAPTERS 16
#define BS_VOICE_SETTING_DEFAULT 0x0060
#define BS_MAX_FDS 16384

struct bs_adapter {
	int dev_id;
	char name[32];
	bdaddr_t addr;
	uint16_t voice_setting;
};

static struct bs_adapter g_adapters[BS_MAX_ADAPTERS];
static int g_nadapters;
static char g_dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int g_have_dir;
static int g_sco_mtu = 48;
static long g_page_timeout_ms;
static long g_inquiry_ms;
static int g_logfd = -1;
static unsigned g_bind_counter;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

enum bs_kind { BS_NONE = 0, BS_HCI, BS_RFCOMM, BS_SCO, BS_L2CAP };

/* What the shim knows about one file descriptor it created. */
struct bs_fd {
	uint8_t kind;
	uint8_t bound;
	uint8_t listening;
	int dev_id;          /* BS_HCI */
	bdaddr_t local;      /* address bound to (an adapter's) */
	bdaddr_t remote;     /* peer, once connected or accepted */
	dev_t st_dev;        /* identity, to notice an fd number reused */
	ino_t st_ino;        /* behind our back (closed by a path we miss) */
	char *unlink_path;   /* listener socket file to remove on close */
};

static struct bs_fd g_fds[BS_MAX_FDS];

/* ------------------------------------------------------------------------ */
/* The real functions                                                        */

#define BS_REAL(ret, name, args)                                           \
	static ret(*real_##name) args;                                      \
	static ret(*bs_real_##name(void)) args                              \
	{                                                                   \
		if (!real_##name)                                           \
			real_##name = (ret(*) args)dlsym(RTLD_NEXT, #name); \
		return real_##name;                                         \
	}

BS_REAL(int, socket, (int, int, int))
BS_REAL(int, bind, (int, const struct sockaddr *, socklen_t))
BS_REAL(int, connect, (int, const struct sockaddr *, socklen_t))
BS_REAL(int, listen, (int, int))
BS_REAL(int, accept, (int, struct sockaddr *, socklen_t *))
BS_REAL(int, accept4, (int, struct sockaddr *, socklen_t *, int))
BS_REAL(int, close, (int))
BS_REAL(ssize_t, read, (int, void *, size_t))
BS_REAL(ssize_t, recv, (int, void *, size_t, int))
BS_REAL(ssize_t, write, (int, const void *, size_t))
BS_REAL(ssize_t, send, (int, const void *, size_t, int))
BS_REAL(int, getsockopt, (int, int, int, void *, socklen_t *))
BS_REAL(int, setsockopt, (int, int, int, const void *, socklen_t))
BS_REAL(int, ioctl, (int, unsigned long, void *))

/* libbluetooth's own sdp_create, to hand chan_mobile a session it can use and
 * free with the real sdp_close.  libbluetooth arrives with chan_mobile.so,
 * dlopen()ed by Asterisk, possibly outside the global scope RTLD_NEXT sees. */
static sdp_session_t *bs_sdp_create(int sk, uint32_t flags)
{
	sdp_session_t *(*create)(int, uint32_t);
	void *lib;
	sdp_session_t *session;

	create = (sdp_session_t * (*)(int, uint32_t)) dlsym(RTLD_NEXT, "sdp_create");
	if (!create) {
		lib = dlopen("libbluetooth.so.3", RTLD_LAZY | RTLD_NOLOAD);
		if (lib)
			create = (sdp_session_t * (*)(int, uint32_t)) dlsym(lib, "sdp_create");
	}
	if (create)
		return create(sk, flags);
	/* Same layout as libbluetooth's; sdp_close copes with priv == NULL. */
	session = calloc(1, sizeof(*session));
	if (!session) {
		errno = ENOMEM;
		return NULL;
	}
	session->sock = sk;
	session->flags = (int)flags;
	return session;
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static void bs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void bs_log(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n, saved = errno;
	ssize_t unused;

	if (g_logfd < 0)
		return;
	n = snprintf(line, sizeof(line), "btshim[%d]: ", (int)getpid());
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	unused = bs_real_write()(g_logfd, line, (size_t)n);
	(void)unused;
	errno = saved;
}

static void bs_sleep_ms(long ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int bs_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "00:1A:7D:DA:71:10" -> bdaddr_t (b[0] is the last octet, as str2ba). */
static int bs_parse_mac(const char *s, size_t len, bdaddr_t *out)
{
	size_t i;
	int hi, lo;

	if (len != 17)
		return -1;
	for (i = 0; i < 6; i++) {
		hi = bs_hex(s[i * 3]);
		lo = bs_hex(s[i * 3 + 1]);
		if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
			return -1;
		out->b[5 - i] = (uint8_t)(hi * 16 + lo);
	}
	return 0;
}

/* 12 hex digits (a socket-name MAC12) -> bdaddr_t. */
static int bs_parse_mac12(const char *s, bdaddr_t *out)
{
	int i, hi, lo;

	for (i = 0; i < 6; i++) {
		hi = bs_hex(s[i * 2]);
		lo = bs_hex(s[i * 2 + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out->b[5 - i] = (uint8_t)(hi * 16 + lo);
	}
	return 0;
}

static void bs_mac12(const bdaddr_t *ba, char out[13])
{
	snprintf(out, 13, "%02X%02X%02X%02X%02X%02X", ba->b[5], ba->b[4], ba->b[3], ba->b[2],
		 ba->b[1], ba->b[0]);
}

static int bs_is_any(const bdaddr_t *ba)
{
	static const bdaddr_t any = {{0, 0, 0, 0, 0, 0}};
	return memcmp(ba, &any, sizeof(any)) == 0;
}

static int bs_is_local(const bdaddr_t *ba)
{
	static const bdaddr_t local = {{0, 0, 0, 0xff, 0xff, 0xff}};
	return memcmp(ba, &local, sizeof(local)) == 0;
}

static struct bs_adapter *bs_adapter_by_id(int dev_id)
{
	int i;

	for (i = 0; i < g_nadapters; i++)
		if (g_adapters[i].dev_id == dev_id)
			return &g_adapters[i];
	return NULL;
}

static struct bs_adapter *bs_adapter_by_addr(const bdaddr_t *ba)
{
	int i;

	for (i = 0; i < g_nadapters; i++)
		if (memcmp(&g_adapters[i].addr, ba, sizeof(*ba)) == 0)
			return &g_adapters[i];
	return NULL;
}

/* BDADDR_ANY means "whichever adapter": the first one, as the kernel's
 * hci_get_route would pick. */
static struct bs_adapter *bs_adapter_for_bind(const bdaddr_t *ba)
{
	if (bs_is_any(ba))
		return g_nadapters ? &g_adapters[0] : NULL;
	return bs_adapter_by_addr(ba);
}

/* Build "<dir>/<prefix><MAC12><suffix>" into a sockaddr_un. */
static int bs_path_addr(struct sockaddr_un *sa, socklen_t *len, const char *prefix,
			const bdaddr_t *ba, const char *suffix)
{
	char mac[13];
	int n;

	bs_mac12(ba, mac);
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s%s%s", g_dir, prefix, mac, suffix);
	if (n < 0 || n >= (int)sizeof(sa->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
	return 0;
}

static int bs_phone_in_range(const bdaddr_t *ba)
{
	struct sockaddr_un sa;
	socklen_t len;

	if (bs_path_addr(&sa, &len, "sdp-", ba, "") < 0)
		return 0;
	return access(sa.sun_path, F_OK) == 0;
}

/* Read "key=value" from the phone's dev-<MAC12> file. */
static int bs_dev_info(const bdaddr_t *ba, const char *key, char *out, size_t outlen)
{
	struct sockaddr_un sa;
	socklen_t len;
	char line[512];
	size_t klen = strlen(key);
	FILE *f;
	int found = -1;

	if (bs_path_addr(&sa, &len, "dev-", ba, "") < 0)
		return -1;
	f = fopen(sa.sun_path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
			snprintf(out, outlen, "%s", line + klen + 1);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

/* ------------------------------------------------------------------------ */
/* The fd table                                                              */

static struct bs_fd *bs_entry(int fd)
{
	if (fd < 0 || fd >= BS_MAX_FDS)
		return NULL;
	return &g_fds[fd];
}

static void bs_forget(struct bs_fd *e)
{
	if (e->unlink_path) {
		unlink(e->unlink_path);
		free(e->unlink_path);
	}
	memset(e, 0, sizeof(*e));
}

/* The entry for fd if the shim created it and it is still the same socket.
 * Some fds leave by paths the shim does not see (fclose, close_range); the
 * identity check keeps a recycled number from inheriting Bluetooth manners. */
static struct bs_fd *bs_lookup(int fd)
{
	struct bs_fd *e = bs_entry(fd);
	struct stat st;
	int saved = errno;

	if (!e || e->kind == BS_NONE)
		return NULL;
	if (fstat(fd, &st) < 0 || st.st_dev != e->st_dev || st.st_ino != e->st_ino) {
		pthread_mutex_lock(&g_lock);
		e->unlink_path = NULL; /* not ours to remove any more */
		bs_forget(e);
		pthread_mutex_unlock(&g_lock);
		errno = saved;
		return NULL;
	}
	errno = saved;
	return e;
}

static void bs_track(int fd, enum bs_kind kind)
{
	struct bs_fd *e = bs_entry(fd);
	struct stat st;

	if (!e || fstat(fd, &st) < 0)
		return;
	pthread_mutex_lock(&g_lock);
	if (e->kind != BS_NONE)
		bs_forget(e);
	e->kind = (uint8_t)kind;
	e->st_dev = st.st_dev;
	e->st_ino = st.st_ino;
	pthread_mutex_unlock(&g_lock);
}

/* Give a client socket the name the peer reads our adapter from. */
static int bs_bind_adapter_name(int fd, const bdaddr_t *adapter)
{
	struct sockaddr_un sa;
	char mac[13];
	unsigned n;
	int len;

	bs_mac12(adapter, mac);
	n = __atomic_add_fetch(&g_bind_counter, 1, __ATOMIC_RELAXED);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	len = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "btshim-adapter-%s-%d-%u", mac,
		       (int)getpid(), n);
	return bs_real_bind()(fd, (struct sockaddr *)&sa,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len));
}

/* Read a phone's address from the name its SCO client socket is bound to. */
static int bs_peer_phone(const struct sockaddr_un *sa, socklen_t len, bdaddr_t *out)
{
	static const char tag[] = "btshim-phone-";
	const char *name, *slash;
	size_t n;

	if (len <= offsetof(struct sockaddr_un, sun_path))
		return -1;
	n = len - offsetof(struct sockaddr_un, sun_path);
	name = sa->sun_path;
	if (name[0] == '\0') {
		name++;
		n--;
	} else {
		slash = memrchr(name, '/', strnlen(name, n));
		if (slash) {
			n -= (size_t)(slash + 1 - name);
			name = slash + 1;
		}
	}
	if (n < sizeof(tag) - 1 + 12 || memcmp(name, tag, sizeof(tag) - 1) != 0)
		return -1;
	return bs_parse_mac12(name + sizeof(tag) - 1, out);
}

/* ------------------------------------------------------------------------ */
/* Start-up                                                                  */

static void bs_parse_adapters(const char *spec)
{
	const char *p = spec, *end, *eq;
	size_t nlen;
	struct bs_adapter *a;
	char *tail;
	long id;

	while (p && *p && g_nadapters < BS_MAX_ADAPTERS) {
		while (*p == ',' || *p == ' ')
			p++;
		if (!*p)
			break;
		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		eq = memchr(p, '=', (size_t)(end - p));
		if (eq) {
			a = &g_adapters[g_nadapters];
			nlen = (size_t)(eq - p);
			if (nlen >= sizeof(a->name))
				nlen = sizeof(a->name) - 1;
			memcpy(a->name, p, nlen);
			a->name[nlen] = '\0';
			if (bs_parse_mac(eq + 1, (size_t)(end - eq - 1), &a->addr) == 0) {
				a->dev_id = g_nadapters;
				if (strncmp(a->name, "hci", 3) == 0 && a->name[3]) {
					id = strtol(a->name + 3, &tail, 10);
					if (!*tail && id >= 0 && id < 0x10000)
						a->dev_id = (int)id;
				}
				a->voice_setting = BS_VOICE_SETTING_DEFAULT;
				g_nadapters++;
			} else {
				bs_log("ignoring adapter %.*s: bad address", (int)(end - p), p);
			}
		}
		p = end;
	}
}

static void bs_parse_voice(const char *spec)
{
	const char *p = spec, *end, *eq;
	bdaddr_t ba;
	char name[32];
	size_t nlen;
	long value;
	int i;

	while (p && *p) {
		while (*p == ',' || *p == ' ')
			p++;
		if (!*p)
			break;
		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		eq = memchr(p, '=', (size_t)(end - p));
		if (eq) {
			nlen = (size_t)(eq - p) < sizeof(name) - 1 ? (size_t)(eq - p) : sizeof(name) - 1;
			memcpy(name, p, nlen);
			name[nlen] = '\0';
			value = strtol(eq + 1, NULL, 0);
			for (i = 0; i < g_nadapters; i++) {
				if (strcmp(g_adapters[i].name, name) == 0 ||
				    (bs_parse_mac(name, nlen, &ba) == 0 &&
				     memcmp(&ba, &g_adapters[i].addr, sizeof(ba)) == 0))
					g_adapters[i].voice_setting = (uint16_t)value;
			}
		}
		p = end;
	}
}

__attribute__((constructor)) static void bs_init(void)
{
	const char *v;
	int i;
	char mac[13];

	v = getenv("BTSHIM_LOG");
	if (v && *v)
		g_logfd = open(v, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	v = getenv("BTSHIM_DIR");
	if (v && *v && strlen(v) < sizeof(g_dir) - 32) {
		snprintf(g_dir, sizeof(g_dir), "%s", v);
		g_have_dir = 1;
	}
	bs_parse_adapters(getenv("BTSHIM_ADAPTERS"));
	bs_parse_voice(getenv("BTSHIM_VOICE_SETTING"));
	v = getenv("BTSHIM_SCO_MTU");
	if (v && *v)
		g_sco_mtu = atoi(v);
	v = getenv("BTSHIM_PAGE_TIMEOUT_MS");
	if (v && *v)
		g_page_timeout_ms = atol(v);
	v = getenv("BTSHIM_INQUIRY_MS");
	if (v && *v)
		g_inquiry_ms = atol(v);
	if (!g_have_dir)
		g_nadapters = 0; /* no socket directory: no Bluetooth at all */
	for (i = 0; i < g_nadapters; i++) {
		bs_mac12(&g_adapters[i].addr, mac);
		bs_log("adapter %s id %d %s voice 0x%04x", g_adapters[i].name,
		       g_adapters[i].dev_id, mac, g_adapters[i].voice_setting);
	}
}

/* ------------------------------------------------------------------------ */
/* libbluetooth: HCI                                                        */

/* As libbluetooth: the first adapter whose address differs from bdaddr (a
 * route to that device), else one that has it. */
int hci_get_route(bdaddr_t *bdaddr)
{
	int i;

	for (i = 0; i < g_nadapters; i++)
		if (!bdaddr || memcmp(&g_adapters[i].addr, bdaddr, sizeof(*bdaddr)) != 0)
			return g_adapters[i].dev_id;
	if (g_nadapters)
		return g_adapters[0].dev_id;
	errno = ENODEV;
	return -1;
}

int hci_devid(const char *str)
{
	bdaddr_t ba;
	struct bs_adapter *a;
	int i;

	if (!str) {
		errno = EINVAL;
		return -1;
	}
	if (bs_parse_mac(str, strlen(str), &ba) == 0) {
		a = bs_adapter_by_addr(&ba);
		if (a)
			return a->dev_id;
	} else {
		for (i = 0; i < g_nadapters; i++)
			if (strcmp(g_adapters[i].name, str) == 0)
				return g_adapters[i].dev_id;
	}
	errno = ENODEV;
	return -1;
}

int hci_devba(int dev_id, bdaddr_t *bdaddr)
{
	struct bs_adapter *a = bs_adapter_by_id(dev_id);

	if (!a) {
		errno = ENODEV;
		return -1;
	}
	*bdaddr = a->addr;
	return 0;
}

int hci_open_dev(int dev_id)
{
	struct bs_adapter *a = bs_adapter_by_id(dev_id);
	struct bs_fd *e;
	int fd;

	if (dev_id < 0 || !a) {
		errno = ENODEV;
		return -1;
	}
	/* Any real descriptor will do: chan_mobile only hands it back to us. */
	fd = bs_real_socket()(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	e = bs_entry(fd);
	if (!e) {
		bs_real_close()(fd);
		errno = EMFILE;
		return -1;
	}
	bs_track(fd, BS_HCI);
	e->dev_id = dev_id;
	e->local = a->addr;
	bs_log("hci_open_dev(%d) = %d", dev_id, fd);
	return fd;
}

int hci_close_dev(int dd)
{
	return close(dd);
}

static struct bs_adapter *bs_hci_adapter(int dd)
{
	struct bs_fd *e = bs_lookup(dd);

	if (!e || e->kind != BS_HCI) {
		errno = EBADF;
		return NULL;
	}
	return bs_adapter_by_id(e->dev_id);
}

int hci_read_voice_setting(int dd, uint16_t *vs, int to)
{
	struct bs_adapter *a = bs_hci_adapter(dd);

	(void)to;
	if (!a)
		return -1;
	/* The controller reports it little endian and libbluetooth passes it on
	 * raw; chan_mobile converts with htobs(). */
	*vs = htole16(a->voice_setting);
	bs_log("hci_read_voice_setting(%s) = 0x%04x", a->name, a->voice_setting);
	return 0;
}

int hci_read_remote_name(int dd, const bdaddr_t *bdaddr, int len, char *name, int to)
{
	char buf[BS_HCI_MAX_NAME_LENGTH + 1];
	char value[BS_HCI_MAX_NAME_LENGTH + 1];
	char mac[13];

	(void)to;
	if (!bs_hci_adapter(dd))
		return -1;
	bs_mac12(bdaddr, mac);
	if (!bs_phone_in_range(bdaddr)) {
		bs_log("hci_read_remote_name(%s): not in range", mac);
		bs_sleep_ms(g_page_timeout_ms);
		errno = EIO; /* HCI status 0x04, page timeout */
		return -1;
	}
	memset(buf, 0, sizeof(buf));
	if (bs_dev_info(bdaddr, "name", value, sizeof(value)) == 0)
		memcpy(buf, value, strnlen(value, BS_HCI_MAX_NAME_LENGTH));
	/* Like the real call: len bytes of the zero-padded 248-byte name. */
	if (len > BS_HCI_MAX_NAME_LENGTH)
		len = BS_HCI_MAX_NAME_LENGTH;
	if (len > 0)
		memcpy(name, buf, (size_t)len);
	bs_log("hci_read_remote_name(%s) = %s", mac, buf);
	return 0;
}

int hci_inquiry(int dev_id, int len, int num_rsp, const uint8_t *lap, inquiry_info **ii,
		long flags)
{
	DIR *d;
	struct dirent *de;
	inquiry_info *out;
	bdaddr_t ba;
	char value[64];
	unsigned long cls;
	int n = 0;

	(void)len;
	(void)lap;
	(void)flags;
	if (dev_id >= 0 && !bs_adapter_by_id(dev_id)) {
		errno = ENODEV;
		return -1;
	}
	if (dev_id < 0 && hci_get_route(NULL) < 0)
		return -1;
	if (num_rsp <= 0)
		num_rsp = 255;
	if (!*ii) {
		*ii = malloc((size_t)num_rsp * sizeof(inquiry_info));
		if (!*ii) {
			errno = ENOMEM;
			return -1;
		}
	}
	out = *ii;
	bs_sleep_ms(g_inquiry_ms);
	d = opendir(g_dir);
	if (!d)
		return 0;
	while ((de = readdir(d)) && n < num_rsp) {
		if (strncmp(de->d_name, "sdp-", 4) != 0 || strlen(de->d_name) != 16)
			continue;
		if (bs_parse_mac12(de->d_name + 4, &ba) < 0)
			continue;
		memset(&out[n], 0, sizeof(out[n]));
		out[n].bdaddr = ba;
		out[n].pscan_rep_mode = 0x01;
		out[n].pscan_period_mode = 0x02;
		if (bs_dev_info(&ba, "class", value, sizeof(value)) == 0) {
			cls = strtoul(value, NULL, 0);
			out[n].dev_class[0] = (uint8_t)(cls & 0xff);
			out[n].dev_class[1] = (uint8_t)((cls >> 8) & 0xff);
			out[n].dev_class[2] = (uint8_t)((cls >> 16) & 0xff);
		}
		n++;
	}
	closedir(d);
	bs_log("hci_inquiry(%d) = %d", dev_id, n);
	return n;
}

/* ------------------------------------------------------------------------ */
/* libbluetooth: SDP                                                        */

sdp_session_t *sdp_connect(const bdaddr_t *src, const bdaddr_t *dst, uint32_t flags)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct bs_adapter *a;
	sdp_session_t *session;
	char mac[13];
	int sk, err;

	if (!g_have_dir) {
		errno = EAFNOSUPPORT;
		return NULL;
	}
	if (bs_is_local(dst)) {
		/* bluetoothd only offers /run/sdp with --compat. */
		bs_log("sdp_connect(local): no legacy SDP server");
		errno = ENOENT;
		return NULL;
	}
	bs_mac12(dst, mac);
	a = bs_adapter_for_bind(src);
	if (!a) {
		errno = EADDRNOTAVAIL;
		return NULL;
	}
	if (bs_path_addr(&sa, &salen, "sdp-", dst, "") < 0)
		return NULL;
	sk = bs_real_socket()(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sk < 0)
		return NULL;
	if (bs_bind_adapter_name(sk, &a->addr) < 0 ||
	    bs_real_connect()(sk, (struct sockaddr *)&sa, salen) < 0) {
		err = errno;
		bs_real_close()(sk);
		bs_log("sdp_connect(%s): %s", mac, strerror(err));
		if (err == ENOENT || err == ECONNREFUSED) {
			bs_sleep_ms(g_page_timeout_ms);
			err = EHOSTDOWN;
		}
		errno = err;
		return NULL;
	}
	if (flags & BS_SDP_NON_BLOCKING)
		fcntl(sk, F_SETFL, fcntl(sk, F_GETFL) | O_NONBLOCK);
	session = bs_sdp_create(sk, flags);
	if (!session) {
		err = errno;
		bs_real_close()(sk);
		errno = err;
		return NULL;
	}
	bs_log("sdp_connect(%s) = fd %d", mac, sk);
	return session;
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                   */

int socket(int domain, int type, int protocol)
{
	int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	int flags = type & (SOCK_NONBLOCK | SOCK_CLOEXEC);
	enum bs_kind kind = BS_NONE;
	int fd, utype = 0;

	if (domain != BS_AF_BLUETOOTH || !g_have_dir)
		return bs_real_socket()(domain, type, protocol);
	if (protocol == BS_BTPROTO_RFCOMM && base == SOCK_STREAM) {
		kind = BS_RFCOMM;
		utype = SOCK_STREAM;
	} else if (protocol == BS_BTPROTO_SCO && base == SOCK_SEQPACKET) {
		kind = BS_SCO;
		utype = SOCK_SEQPACKET;
	} else if (protocol == BS_BTPROTO_L2CAP && base == SOCK_SEQPACKET) {
		kind = BS_L2CAP;
		utype = SOCK_SEQPACKET;
	} else {
		/* Raw HCI, BNEP...: what a kernel without them says. */
		return bs_real_socket()(domain, type, protocol);
	}
	fd = bs_real_socket()(AF_UNIX, utype | flags, 0);
	if (fd < 0)
		return fd;
	if (!bs_entry(fd)) {
		bs_real_close()(fd);
		errno = EMFILE;
		return -1;
	}
	bs_track(fd, kind);
	bs_log("socket(%s) = %d",
	       kind == BS_RFCOMM ? "rfcomm" : kind == BS_SCO ? "sco" : "l2cap", fd);
	return fd;
}

int bind(int fd, __CONST_SOCKADDR_ARG sockaddr_arg, socklen_t len)
{
	const struct sockaddr *addr = sockaddr_arg.__sockaddr__;
	struct bs_fd *e = bs_lookup(fd);
	struct sockaddr_un sa;
	socklen_t salen;
	struct bs_adapter *a;
	const bdaddr_t *ba;
	char mac[13];
	int i, r;

	if (!e || e->kind == BS_HCI)
		return bs_real_bind()(fd, addr, len);
	if (!addr || addr->sa_family != BS_AF_BLUETOOTH) {
		errno = EINVAL;
		return -1;
	}
	if (e->kind == BS_RFCOMM && len >= sizeof(struct bs_sockaddr_rc))
		ba = &((const struct bs_sockaddr_rc *)addr)->rc_bdaddr;
	else if (e->kind == BS_SCO && len >= sizeof(struct bs_sockaddr_sco))
		ba = &((const struct bs_sockaddr_sco *)addr)->sco_bdaddr;
	else if (e->kind == BS_L2CAP && len >= sizeof(struct bs_sockaddr_l2))
		ba = &((const struct bs_sockaddr_l2 *)addr)->l2_bdaddr;
	else {
		errno = EINVAL;
		return -1;
	}
	if (e->bound) {
		errno = EINVAL;
		return -1;
	}
	a = bs_adapter_for_bind(ba);
	if (!a) {
		errno = EADDRNOTAVAIL;
		return -1;
	}
	bs_mac12(&a->addr, mac);
	if (e->kind != BS_SCO) {
		r = bs_bind_adapter_name(fd, &a->addr);
	} else {
		/* An adapter has one SCO listener; the kernel refuses a second. */
		pthread_mutex_lock(&g_lock);
		for (i = 0; i < BS_MAX_FDS; i++) {
			if (i != fd && g_fds[i].kind == BS_SCO && g_fds[i].unlink_path &&
			    memcmp(&g_fds[i].local, &a->addr, sizeof(a->addr)) == 0)
				break;
		}
		pthread_mutex_unlock(&g_lock);
		if (i < BS_MAX_FDS && bs_lookup(i)) {
			errno = EADDRINUSE;
			return -1;
		}
		if (bs_path_addr(&sa, &salen, "sco-", &a->addr, "") < 0)
			return -1;
		unlink(sa.sun_path); /* left by an earlier run */
		r = bs_real_bind()(fd, (struct sockaddr *)&sa, salen);
		if (r == 0)
			e->unlink_path = strdup(sa.sun_path);
	}
	if (r < 0) {
		bs_log("bind(%d, %s): %s", fd, mac, strerror(errno));
		return r;
	}
	e->bound = 1;
	e->local = a->addr;
	bs_log("bind(%d, %s)", fd, mac);
	return 0;
}

int listen(int fd, int backlog)
{
	struct bs_fd *e = bs_lookup(fd);
	int r;

	if (!e)
		return bs_real_listen()(fd, backlog);
	if (e->kind != BS_SCO || !e->bound) {
		/* chan_mobile listens only for SCO; RFCOMM/L2CAP servers would need
		 * a naming scheme of their own. */
		errno = EOPNOTSUPP;
		return -1;
	}
	r = bs_real_listen()(fd, backlog);
	if (r == 0)
		e->listening = 1;
	return r;
}

static int bs_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	struct bs_fd *e = bs_lookup(fd), *ne;
	struct sockaddr_un peer;
	struct bs_sockaddr_sco sco;
	socklen_t plen = sizeof(peer);
	bdaddr_t phone;
	char mac[13];
	int nfd;

	if (!e)
		return flags ? bs_real_accept4()(fd, addr, addrlen, flags)
			     : bs_real_accept()(fd, addr, addrlen);
	memset(&peer, 0, sizeof(peer));
	nfd = bs_real_accept4()(fd, (struct sockaddr *)&peer, &plen, flags);
	if (nfd < 0)
		return nfd;
	memset(&phone, 0, sizeof(phone));
	if (bs_peer_phone(&peer, plen, &phone) < 0)
		bs_log("accept(%d): peer did not say which phone it is", fd);
	ne = bs_entry(nfd);
	if (!ne) {
		bs_real_close()(nfd);
		errno = EMFILE;
		return -1;
	}
	bs_track(nfd, (enum bs_kind)e->kind);
	ne->bound = 1;
	ne->local = e->local;
	ne->remote = phone;
	if (addr && addrlen) {
		memset(&sco, 0, sizeof(sco));
		sco.sco_family = BS_AF_BLUETOOTH;
		sco.sco_bdaddr = phone;
		memcpy(addr, &sco, *addrlen < sizeof(sco) ? *addrlen : sizeof(sco));
		*addrlen = sizeof(sco);
	}
	bs_mac12(&phone, mac);
	bs_log("accept(%d) = %d from %s", fd, nfd, mac);
	return nfd;
}

int accept(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict addrlen)
{
	return bs_accept(fd, addr.__sockaddr__, addrlen, 0);
}

int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict addrlen, int flags)
{
	return bs_accept(fd, addr.__sockaddr__, addrlen, flags);
}

int connect(int fd, __CONST_SOCKADDR_ARG sockaddr_arg, socklen_t len)
{
	const struct sockaddr *addr = sockaddr_arg.__sockaddr__;
	struct bs_fd *e = bs_lookup(fd);
	struct sockaddr_un sa;
	socklen_t salen;
	const bdaddr_t *dst;
	char suffix[16] = "";
	const char *prefix;
	char mac[13];
	int err;

	if (!e || e->kind == BS_HCI)
		return bs_real_connect()(fd, addr, len);
	if (!addr || addr->sa_family != BS_AF_BLUETOOTH) {
		errno = EINVAL;
		return -1;
	}
	if (e->kind == BS_RFCOMM && len >= sizeof(struct bs_sockaddr_rc)) {
		const struct bs_sockaddr_rc *rc = (const struct bs_sockaddr_rc *)addr;
		dst = &rc->rc_bdaddr;
		prefix = "rf-";
		snprintf(suffix, sizeof(suffix), "-%u", rc->rc_channel);
	} else if (e->kind == BS_SCO && len >= sizeof(struct bs_sockaddr_sco)) {
		dst = &((const struct bs_sockaddr_sco *)addr)->sco_bdaddr;
		prefix = "sco-";
	} else if (e->kind == BS_L2CAP && len >= sizeof(struct bs_sockaddr_l2)) {
		const struct bs_sockaddr_l2 *l2 = (const struct bs_sockaddr_l2 *)addr;
		dst = &l2->l2_bdaddr;
		if (le16toh(l2->l2_psm) != BS_SDP_PSM) {
			errno = ECONNREFUSED;
			return -1;
		}
		prefix = "sdp-";
	} else {
		errno = EINVAL;
		return -1;
	}
	bs_mac12(dst, mac);
	if (!e->bound) {
		/* The kernel picks a local adapter; so do we. */
		if (!g_nadapters) {
			errno = EHOSTUNREACH;
			return -1;
		}
		if (bs_bind_adapter_name(fd, &g_adapters[0].addr) < 0)
			return -1;
		e->bound = 1;
		e->local = g_adapters[0].addr;
	}
	if (bs_path_addr(&sa, &salen, prefix, dst, suffix) < 0)
		return -1;
	if (bs_real_connect()(fd, (struct sockaddr *)&sa, salen) == 0) {
		e->remote = *dst;
		bs_log("connect(%d, %s%s%s) ok", fd, prefix, mac, suffix);
		return 0;
	}
	err = errno;
	if (err == ENOENT || err == ECONNREFUSED) {
		if (bs_phone_in_range(dst)) {
			err = ECONNREFUSED; /* phone there, nobody on that channel */
		} else {
			bs_sleep_ms(g_page_timeout_ms);
			err = EHOSTDOWN; /* page timeout */
		}
	}
	bs_log("connect(%d, %s%s%s): %s", fd, prefix, mac, suffix, strerror(err));
	errno = err;
	return -1;
}

int close(int fd)
{
	struct bs_fd *e = bs_entry(fd);

	if (e && e->kind != BS_NONE) {
		pthread_mutex_lock(&g_lock);
		if (e->kind != BS_NONE) {
			bs_log("close(%d)", fd);
			bs_forget(e);
		}
		pthread_mutex_unlock(&g_lock);
	}
	return bs_real_close()(fd);
}

/* The kernel's bt_to_errno() (net/bluetooth/lib.c) for the HCI disconnection
 * reasons a lost link can come with.  0x08, Connection Timeout, is the link
 * supervision timeout expiring: a phone that walked out of range. */
static int bs_bt_to_errno(unsigned code)
{
	switch (code) {
	case 0x04: /* Page Timeout */
		return EHOSTDOWN;
	case 0x08: /* Connection Timeout */
	case 0x10: /* Connection Accept Timeout Exceeded */
		return ETIMEDOUT;
	case 0x13: /* Remote User Terminated Connection */
	case 0x14: /* Remote Device Terminated due to Low Resources */
	case 0x15: /* Remote Device Terminated due to Power Off */
		return ECONNRESET;
	case 0x16: /* Connection Terminated By Local Host */
		return ECONNABORTED;
	default:
		return ENOSYS;
	}
}

/* The errno for a closed link to `remote`: the lost-<PHONE> reason if the
 * controller declared the link lost, else a reset (the peer disconnected). */
static int bs_link_errno(const bdaddr_t *remote)
{
	struct sockaddr_un sa;
	socklen_t len;
	char text[32] = "";
	unsigned code;
	FILE *f;

	if (bs_path_addr(&sa, &len, "lost-", remote, "") < 0)
		return ECONNRESET;
	f = fopen(sa.sun_path, "re");
	if (!f)
		return ECONNRESET;
	if (!fgets(text, sizeof(text), f) || sscanf(text, "%x", &code) != 1)
		code = 0x13;
	fclose(f);
	return bs_bt_to_errno(code);
}

/* A Bluetooth link whose peer went away fails with an errno (ECONNRESET, or
 * the reason's errno for a lost link); a Unix socket just reads end of file.
 * Only connected shim sockets are translated. */
static ssize_t bs_eof_is_reset(int fd, ssize_t r, size_t n)
{
	struct bs_fd *e;
	int err;

	if (r != 0 || n == 0)
		return r;
	e = bs_lookup(fd);
	if (!e || e->kind == BS_HCI || e->listening)
		return r;
	err = bs_link_errno(&e->remote);
	bs_log("read(%d): peer closed -> %s", fd, strerror(err));
	errno = err;
	return -1;
}

/* EPIPE from a Unix socket: the link is gone, reported as reading would. */
static void bs_epipe_is_reset(int fd)
{
	struct bs_fd *e;

	if (errno != EPIPE)
		return;
	e = bs_lookup(fd);
	errno = e ? bs_link_errno(&e->remote) : ECONNRESET;
}

ssize_t read(int fd, void *buf, size_t n)
{
	ssize_t r = bs_real_read()(fd, buf, n);

	if (r == 0 && fd >= 0 && fd < BS_MAX_FDS && g_fds[fd].kind != BS_NONE)
		return bs_eof_is_reset(fd, r, n);
	return r;
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	ssize_t r = bs_real_recv()(fd, buf, n, flags);

	if (r == 0 && fd >= 0 && fd < BS_MAX_FDS && g_fds[fd].kind != BS_NONE)
		return bs_eof_is_reset(fd, r, n);
	return r;
}

ssize_t write(int fd, const void *buf, size_t n)
{
	ssize_t r;

	if (fd < 0 || fd >= BS_MAX_FDS || g_fds[fd].kind == BS_NONE || g_fds[fd].kind == BS_HCI)
		return bs_real_write()(fd, buf, n);
	if (!bs_lookup(fd))
		return bs_real_write()(fd, buf, n);
	r = bs_real_send()(fd, buf, n, MSG_NOSIGNAL);
	if (r < 0)
		bs_epipe_is_reset(fd);
	return r;
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	ssize_t r;

	if (fd < 0 || fd >= BS_MAX_FDS || g_fds[fd].kind == BS_NONE || !bs_lookup(fd))
		return bs_real_send()(fd, buf, n, flags);
	r = bs_real_send()(fd, buf, n, flags | MSG_NOSIGNAL);
	if (r < 0)
		bs_epipe_is_reset(fd);
	return r;
}

int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
	struct bs_fd *e;

	if (level == SOL_SOCKET || !(e = bs_lookup(fd)) || e->kind == BS_HCI)
		return bs_real_getsockopt()(fd, level, optname, optval, optlen);
	if (level == BS_SOL_SCO && e->kind == BS_SCO && optval && optlen) {
		if (optname == BS_SCO_OPTIONS) {
			struct bs_sco_options so = {.mtu = (uint16_t)g_sco_mtu};
			memcpy(optval, &so, *optlen < sizeof(so) ? *optlen : sizeof(so));
			*optlen = *optlen < sizeof(so) ? *optlen : sizeof(so);
			return 0;
		}
		if (optname == BS_SCO_CONNINFO) {
			struct bs_sco_conninfo ci = {.hci_handle = (uint16_t)(fd & 0x0fff)};
			memcpy(optval, &ci, *optlen < sizeof(ci) ? *optlen : sizeof(ci));
			*optlen = *optlen < sizeof(ci) ? *optlen : sizeof(ci);
			return 0;
		}
	}
	errno = ENOPROTOOPT;
	return -1;
}

int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
	struct bs_fd *e;

	if (level == SOL_SOCKET || !(e = bs_lookup(fd)) || e->kind == BS_HCI)
		return bs_real_setsockopt()(fd, level, optname, optval, optlen);
	/* Security levels, link modes, MTUs: accepted and ignored. */
	if (level == BS_SOL_SCO || level == BS_SOL_RFCOMM || level == BS_SOL_L2CAP ||
	    level == BS_SOL_BLUETOOTH)
		return 0;
	errno = ENOPROTOOPT;
	return -1;
}

int ioctl(int fd, unsigned long request, ...)
{
	struct bs_fd *e;
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (fd >= 0 && fd < BS_MAX_FDS && g_fds[fd].kind == BS_HCI && (e = bs_lookup(fd)) &&
	    e->kind == BS_HCI) {
		/* forcemaster's HCISETLINKMODE and friends: a dongle would obey. */
		if (request == BS_HCISETLINKMODE || request == BS_HCISETLINKPOL ||
		    request == BS_HCIDEVUP) {
			bs_log("ioctl(hci%d, 0x%lx)", e->dev_id, request);
			return 0;
		}
		errno = EINVAL;
		return -1;
	}
	return bs_real_ioctl()(fd, request, arg);
}
