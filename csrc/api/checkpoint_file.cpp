// Checkpoint files for the C++ API: an atomic, durable save and a load with bulk reads straight
// into each array (POSIX I/O; the format itself is in checkpoint.cpp).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <random>
#include <system_error>
#include <thread>

#include "checkpoint_stream.h"

namespace genesis::checkpoint {

namespace {

[[noreturn]] void fail_errno(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

// An owned file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { close(); }
  int get() const { return fd_; }
  int close() {
    const int rc = fd_ >= 0 ? ::close(fd_) : 0;
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

class FileSink : public Sink {
 public:
  FileSink(int fd, const std::string& path) : fd_(fd), path_(path) {}
  void write(const unsigned char* data, size_t n) override {
    while (n) {
      // Linux transfers at most ~2 GiB per call; the loop also handles short writes.
      const ssize_t done = ::write(fd_, data, n < (size_t(1) << 30) ? n : (size_t(1) << 30));
      if (done < 0) {
        if (errno == EINTR) continue;
        fail_errno("cannot write checkpoint " + path_);
      }
      data += done;
      n -= static_cast<size_t>(done);
    }
  }

 private:
  int fd_;
  const std::string& path_;
};

class FileSource : public Source {
 public:
  FileSource(int fd, const std::string& path) : fd_(fd), path_(path) {}
  void read(unsigned char* dst, size_t n) override {
    while (n) {
      const ssize_t done = ::read(fd_, dst, n < (size_t(1) << 30) ? n : (size_t(1) << 30));
      if (done < 0) {
        if (errno == EINTR) continue;
        fail_errno("cannot read checkpoint " + path_);
      }
      if (done == 0) throw CheckpointError("checkpoint file ended early (was it changed while being read?)");
      dst += done;
      n -= static_cast<size_t>(done);
    }
  }

 private:
  int fd_;
  const std::string& path_;
};

// The file a path names: through a symlink, the file it points to (the link is kept).
std::string resolve(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return path;
  char* real = ::realpath(path.c_str(), nullptr);
  if (!real) return path;  // a dangling link: replace the link itself
  const std::string resolved(real);
  std::free(real);
  return resolved;
}

void fsync_folder(const std::string& folder) {
  Fd fd(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) fail_errno("cannot sync folder " + folder);
}

// Replacing a file frees the blocks or pages of the previous one inside rename(), which for a
// 1 GB checkpoint costs 0.3-0.4 s on tmpfs and ext4 (measured with bench/checkpoint_io.cpp):
// a third of the save. The previous file is therefore held open across the rename, so that
// its last reference is this descriptor, and closed on a detached thread afterwards: the
// freeing overlaps whatever the caller does next. The new file is complete and durable before
// this starts, so nothing about the save's guarantees changes; if the process exits first, the
// kernel closes the descriptor (and frees the file) itself.
constexpr off_t kReleaseInBackground = off_t(64) << 20;

class PreviousFile {
 public:
  PreviousFile(const std::string& path, const struct stat& st)
      : fd_(S_ISREG(st.st_mode) && st.st_size >= kReleaseInBackground
                ? ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                : -1) {}
  PreviousFile(const PreviousFile&) = delete;
  PreviousFile& operator=(const PreviousFile&) = delete;
  ~PreviousFile() {
    if (fd_ >= 0) ::close(fd_);  // a failed save: the file is still linked, closing is cheap
  }
  void release_in_background() {
    if (fd_ < 0) return;
    try {
      std::thread([fd = fd_] { ::close(fd); }).detach();
      fd_ = -1;
    } catch (const std::system_error&) {
      // No thread: the destructor closes it here.
    }
  }

 private:
  int fd_;
};

}  // namespace

void save_file(const Document& doc, const std::string& path) {
  const Plan p = plan(doc);  // every check before the file system is touched
  const std::string target = resolve(path);
  struct stat existing;
  if (::stat(target.c_str(), &existing) == 0 && !S_ISREG(existing.st_mode)) {
    // A named pipe or a device such as /dev/null: write into it, never replace it.
    Fd fd(::open(target.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    if (fd.get() < 0) fail_errno("cannot open " + target);
    FileSink sink(fd.get(), target);
    write(p, sink);
    if (fd.close() != 0) fail_errno("cannot close " + target);
    return;
  }
  const size_t slash = target.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : slash == 0 ? "/" : target.substr(0, slash);
  const std::string name = slash == std::string::npos ? target : target.substr(slash + 1);
  std::random_device random;
  std::string temporary;
  int raw = -1;
  while (raw < 0) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, ".%08x%04x.tmp", random(), random() & 0xFFFF);
    temporary = folder + "/." + name.substr(0, 200) + suffix;  // within the 255-byte name limit
    // Mode 0666 filtered by the umask: the permissions a plain create would give.
    raw = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (raw < 0 && errno != EEXIST) fail_errno("cannot create checkpoint " + temporary);
  }
  Fd fd(raw);
  struct stat none = {};
  PreviousFile previous(target, ::stat(target.c_str(), &existing) == 0 ? existing : none);
  try {
    FileSink sink(fd.get(), temporary);
    write(p, sink);
    if (::stat(target.c_str(), &existing) == 0 && ::fchmod(fd.get(), existing.st_mode & 07777) != 0)
      fail_errno("cannot set the mode of " + temporary);
    if (::fsync(fd.get()) != 0) fail_errno("cannot sync checkpoint " + temporary);
    if (fd.close() != 0) fail_errno("cannot close checkpoint " + temporary);
    if (::rename(temporary.c_str(), target.c_str()) != 0) fail_errno("cannot replace checkpoint " + target);
  } catch (...) {
    fd.close();
    ::unlink(temporary.c_str());
    throw;
  }
  fsync_folder(folder);
  previous.release_in_background();
}

Document load_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) fail_errno("cannot open checkpoint " + path);
  try {
    if (S_ISREG(st.st_mode)) {
      // The file is read once, front to back: a larger read-ahead keeps a disk busy while the
      // reader checksums and places the previous chunk (a hint; no effect on cached files).
      ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
      FileSource source(fd.get(), path);
      return read(source, static_cast<uint64_t>(st.st_size));
    }
    // A pipe or device has no size to check the header against up front: read it all (the
    // memory used is bounded by the bytes actually sent), then decode from memory.
    std::vector<unsigned char> bytes;
    unsigned char chunk[1 << 16];
    for (ssize_t n; (n = ::read(fd.get(), chunk, sizeof chunk)) != 0;) {
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_errno("cannot read checkpoint " + path);
      }
      bytes.insert(bytes.end(), chunk, chunk + n);
    }
    return decode(bytes.data(), bytes.size());
  } catch (const UnsupportedContent& e) {
    throw UnsupportedContent(path + ": " + e.what());
  } catch (const CheckpointError& e) {
    throw CheckpointError(path + ": " + e.what());
  }
}

}  // namespace genesis::checkpoint
