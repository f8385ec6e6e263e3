namespace Handoff;

/// <summary>
/// The libc calls Handoff needs and .NET does not expose: fd flags, pipes, posix_spawn with fd
/// placement, waitpid for children not started by <see cref="System.Diagnostics.Process"/>, kill.
/// One nested class per library, one file per function family, errno turned into exceptions at
/// the call sites (the dotnet/runtime Interop layout).
/// </summary>
internal static partial class Interop
{
    internal static partial class Libc
    {
        internal const string LibraryName = "libc";

        internal const int EINTR = 4;
    }
}
