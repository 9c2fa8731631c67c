/*
 * memwriter: the tiny guest's workload and its own test oracle.
 *
 * It dirties a region of memory at a chosen rate and verifies, on every
 * write, that the page still holds what the previous pass stored there.
 * A migration that loses or reorders dirty pages is therefore caught by the
 * guest itself, which prints CORRUPTION to the serial console.
 *
 * It also prints a heartbeat line once a period:
 *     HB boot=<boot id> n=<counter> pass=<pass> pages=<pages written>
 * so a test can prove the same guest (same boot id, growing counter) kept
 * running across a move, without a reboot. The clock is looked at every 64
 * pages inside a batch of writes too, not only between batches: in post-copy
 * every page the guest touches is fetched over the link, so a batch can take
 * seconds, and a host timing the heartbeats (vmtestbed.felt) would otherwise
 * see the batch, not the switch-over's pause.
 *
 * Settings come from the kernel command line, so one initramfs serves
 * every test:
 *     vmm.dirty_mib=N       size of the region to dirty (MiB), default 16
 *     vmm.dirty_rate_mib=R  MiB written per second, 0 = idle, default 0
 *     vmm.hb_ms=M           heartbeat period in milliseconds, default 500
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define PAGE 4096UL

static long cmdline_value(const char *cmdline, const char *key, long fallback)
{
    const char *at = strstr(cmdline, key);
    if (!at)
        return fallback;
    return strtol(at + strlen(key), NULL, 10);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void say(const char *text)
{
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t n = write(1, text, left);
        if (n <= 0)
            return;
        text += n;
        left -= (size_t)n;
    }
}

struct beat {
    double next;    /* when the next heartbeat is due */
    double period;
    uint64_t count;
    const char *boot_id;
};

/* Print a heartbeat if one is due at time t. */
static void heartbeat(struct beat *hb, double t, uint64_t written, uint64_t pages)
{
    char line[160];
    if (t < hb->next)
        return;
    snprintf(line, sizeof line, "HB boot=%s n=%llu pass=%llu pages=%llu\n", hb->boot_id,
             (unsigned long long)hb->count++, (unsigned long long)(written / pages + 1),
             (unsigned long long)written);
    say(line);
    hb->next += hb->period;
    if (hb->next < t)
        hb->next = t + hb->period;
}

int main(void)
{
    char cmdline[4096] = {0};
    char boot_id[64] = "unknown";
    char line[256];

    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
        (void)n;
        close(fd);
    }
    fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, boot_id, 8);
        boot_id[n > 0 ? n : 0] = '\0';
        close(fd);
    }

    long size_mib = cmdline_value(cmdline, "vmm.dirty_mib=", 16);
    long rate_mib = cmdline_value(cmdline, "vmm.dirty_rate_mib=", 0);
    long hb_ms = cmdline_value(cmdline, "vmm.hb_ms=", 500);
    if (size_mib < 1)
        size_mib = 1;
    if (hb_ms < 10)
        hb_ms = 10;

    uint64_t pages = (uint64_t)size_mib * (1024UL * 1024UL / PAGE);
    /* calloc: every page starts at pass 0, which is what pass 1 expects. */
    unsigned char *region = calloc(pages, PAGE);
    if (!region) {
        say("MEMWRITER cannot allocate its region\n");
        return 1;
    }

    snprintf(line, sizeof line, "MEMWRITER start boot=%s size_mib=%ld rate_mib=%ld hb_ms=%ld\n",
             boot_id, size_mib, rate_mib, hb_ms);
    say(line);

    double start = now_seconds();
    struct beat hb = {.next = start, .period = (double)hb_ms / 1000.0, .boot_id = boot_id};
    double pages_per_second = (double)rate_mib * (1024.0 * 1024.0 / PAGE);
    uint64_t written = 0;   /* page writes since start */
    uint64_t corruptions = 0;

    for (;;) {
        double t = now_seconds();
        /*
         * Pace by the total owed since start rather than per tick, so a
         * stall (such as the pause at switch-over) is followed by a catch-up
         * burst: the average rate stays what the command line asked for.
         * The debt is capped at one second of work by moving the baseline, never
         * by skipping pages: a skipped page would fail the next pass's check.
         */
        if (pages_per_second > 0) {
            double debt = (t - start) * pages_per_second - (double)written;
            if (debt > pages_per_second)
                start += (debt - pages_per_second) / pages_per_second;
        }
        uint64_t owed = (uint64_t)((t - start) * pages_per_second);
        while (written < owed) {
            uint64_t index = written % pages;
            uint64_t pass = written / pages + 1;
            uint64_t *first = (uint64_t *)(region + index * PAGE);
            uint64_t *last = (uint64_t *)(region + index * PAGE + PAGE - sizeof(uint64_t));
            uint64_t want = pass == 1 ? 0 : ((pass - 1) << 32) | index;
            if (*first != want || *last != want) {
                if (corruptions++ < 20) {
                    snprintf(line, sizeof line,
                             "CORRUPTION page=%llu pass=%llu first=%llx last=%llx want=%llx\n",
                             (unsigned long long)index, (unsigned long long)pass,
                             (unsigned long long)*first, (unsigned long long)*last,
                             (unsigned long long)want);
                    say(line);
                }
            }
            uint64_t value = (pass << 32) | index;
            *first = value;
            *last = value;
            written++;
            if (written % 64 == 0)
                heartbeat(&hb, now_seconds(), written, pages);
        }
        heartbeat(&hb, t, written, pages);
        usleep(2000);
    }
}
